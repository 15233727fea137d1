//! `enricher bench`: measures the running worker through the real broker.

use crate::config::Settings;

/// Options of `enricher bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Events to publish.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
}

/// Runs the benchmark.
pub async fn run(_settings: &Settings, _args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
