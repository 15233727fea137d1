//! Settling before `enricher bench` starts its clock. On a machine whose
//! broker, database and worker share one disk, a run that starts while the
//! previous run's pages are still being written back measures that
//! writeback: every commit's WAL flush queues behind it. So the bench first
//! asks Postgres for a checkpoint, asks the kernel to write back dirty pages,
//! and waits (bounded) until the kernel's I/O pressure is low. Every write the
//! run itself causes is still measured.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::process::Command;

/// The "some" I/O pressure (share of the last 10 s in which a task waited on
/// I/O, in percent) below which the disk counts as quiet.
const QUIET_IO_PRESSURE: f64 = 1.0;

/// How long the bench waits for a quiet disk before it starts anyway.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// Where Linux reports I/O pressure.
const IO_PRESSURE: &str = "/proc/pressure/io";

/// What settling did, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// Why Postgres did not run the checkpoint (it needs superuser or
    /// `pg_checkpoint`); `None` when it did.
    pub checkpoint_error: Option<String>,
    /// How long the wait for a quiet disk took.
    pub waited: Duration,
    /// The I/O pressure when the wait ended; `None` where the kernel does not
    /// report it.
    pub io_pressure: Option<f64>,
}

impl std::fmt::Display for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let checkpoint = match &self.checkpoint_error {
            None => "checkpoint done".to_owned(),
            Some(error) => format!("no checkpoint ({error})"),
        };
        match self.io_pressure {
            Some(pressure) => write!(
                f,
                "{checkpoint}, waited {:.0} s for the disk (I/O pressure {pressure:.2} %)",
                self.waited.as_secs_f64()
            ),
            None => write!(f, "{checkpoint}, I/O pressure not reported by this kernel"),
        }
    }
}

/// Checkpoints, writes back dirty pages and waits for a quiet disk.
pub async fn settle(pool: &PgPool) -> Settled {
    let checkpoint_error =
        crate::store::checkpoint(pool)
            .await
            .err()
            .map(|error| match error.as_database_error() {
                Some(refused) => refused.message().to_owned(),
                None => error.to_string(),
            });
    // `sync` starts the writeback now instead of when the kernel's dirty
    // pages expire; the wait below covers its end. Where there is no `sync`
    // the wait alone has to do.
    let _ = Command::new("sync").status().await;
    let started = Instant::now();
    let mut pressure = read_io_pressure();
    while let Some(current) = pressure {
        if current < QUIET_IO_PRESSURE || started.elapsed() >= LONGEST_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        pressure = read_io_pressure();
    }
    Settled {
        checkpoint_error,
        waited: started.elapsed(),
        io_pressure: pressure,
    }
}

fn read_io_pressure() -> Option<f64> {
    parse_io_pressure(&std::fs::read_to_string(IO_PRESSURE).ok()?)
}

/// The "some avg10" figure of a `/proc/pressure/io` report.
fn parse_io_pressure(report: &str) -> Option<f64> {
    let some = report.lines().find(|line| line.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|field| field.strip_prefix("avg10="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ten_second_average_of_the_some_line() {
        let report = "some avg10=2.34 avg60=1.81 avg300=0.97 total=16373715\n\
                      full avg10=2.08 avg60=1.56 avg300=0.80 total=13136355\n";
        assert_eq!(parse_io_pressure(report), Some(2.34));
    }

    #[test]
    fn a_report_without_a_some_line_gives_nothing() {
        assert_eq!(
            parse_io_pressure("full avg10=2.08 avg60=1.56 avg300=0.80 total=1\n"),
            None
        );
        assert_eq!(parse_io_pressure("some avg10=x\n"), None);
    }

    #[test]
    fn the_report_line_names_what_was_done() {
        let settled = Settled {
            checkpoint_error: Some("must be superuser".to_owned()),
            waited: Duration::from_secs(12),
            io_pressure: Some(0.4),
        };
        assert_eq!(
            settled.to_string(),
            "no checkpoint (must be superuser), waited 12 s for the disk (I/O pressure 0.40 %)"
        );
        let settled = Settled {
            checkpoint_error: None,
            waited: Duration::ZERO,
            io_pressure: None,
        };
        assert_eq!(
            settled.to_string(),
            "checkpoint done, I/O pressure not reported by this kernel"
        );
    }
}
