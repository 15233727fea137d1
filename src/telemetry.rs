//! Builds the tracing subscriber once, in the format the operator chose.
//! Message texts and field values are never passed to log macros anywhere in
//! enricher; logs carry ids, field names, counts and reasons only. Colour
//! codes are written only when stderr is a terminal, so log files and
//! collectors get plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

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
    let colour = std::io::stderr().is_terminal();
    let installed = subscriber(settings.format, filter, std::io::stderr, colour).try_init();
    // A second init (tests, embedded use) keeps the first subscriber.
    drop(installed);
}

/// The subscriber writing `format` lines to `writer`, with ANSI colour codes
/// only when `colour` is set.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    colour: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour);
    match format {
        LogFormat::Json => Box::new(builder.json().finish()),
        LogFormat::Pretty => Box::new(builder.finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_line(format: LogFormat, colour: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = subscriber(
            format,
            EnvFilter::new("info"),
            move || writer.clone(),
            colour,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(customers = 3, "retention sweep removed customers");
        });
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn lines_carry_colour_codes_only_when_asked() {
        for format in [LogFormat::Pretty, LogFormat::Json] {
            let plain = log_line(format, false);
            assert!(
                plain.contains("retention sweep removed customers"),
                "{plain}"
            );
            assert!(
                !plain.contains('\u{1b}'),
                "{format:?} without colour: {plain:?}"
            );
        }
        let coloured = log_line(LogFormat::Pretty, true);
        assert!(coloured.contains("\u{1b}["), "{coloured:?}");
    }
}
