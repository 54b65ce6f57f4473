//! placeholder
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    Transport,
}
pub fn run(_w: BenchCmd) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
