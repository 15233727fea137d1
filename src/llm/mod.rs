//! The model side of enrichment: the OpenAI-compatible HTTP client, the
//! strict tool schema, the prompt templates, and the model client that turns
//! a rendered request into a proposal. Nothing here decides what is written;
//! the decision core disposes of every proposal.

pub mod context;
pub mod http;
pub mod model_client;
pub mod prompt_size;
pub mod prompts;
pub mod request;
pub mod schema;

/// The name of the tool the model must call; the prompts name it too.
pub const TOOL_NAME: &str = "record_enrichment";
