//! The model side of enrichment: the OpenAI-compatible client, the strict
//! tool schema, the prompt templates, and one call that turns a customer
//! message into a proposal. Nothing here decides what is written; the
//! decision core disposes of every proposal.

pub mod client;
pub mod context;
pub mod enrich;
pub mod prompt_size;
pub mod prompts;
pub mod request;
pub mod schema;
