//! Builds the tracing subscriber once, in the format the operator chose.
//! Message texts and field values are never passed to log macros anywhere in
//! enricher; logs carry ids, field names, counts and reasons only.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

/// The level filter: `RUST_LOG`, else `level` with chatty libraries at
/// `warn`. async-openai logs whole response bodies (model answers, which
/// quote customers) at ERROR and WARN, so its target is off whatever
/// `RUST_LOG` says.
pub fn filter(level: &str) -> EnvFilter {
    let quiet = "lapin=warn,sqlx=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn";
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},{quiet}")));
    match "async_openai=off".parse() {
        Ok(silenced) => filter.add_directive(silenced),
        Err(_) => filter,
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(settings: &TelemetrySettings) {
    let filter = filter(&settings.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A second init (tests, embedded use) keeps the first subscriber.
    drop(installed);
}
