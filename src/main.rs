//! The `copyimage-canceller` command line: run | cancel | crd | ecs-simulator | demo.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Cancels Alibaba Cloud ECS cross-region image copies (CancelCopyImage).
#[derive(Parser, Debug)]
#[command(name = "copyimage-canceller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A local CancelCopyImage endpoint that checks signatures like ECS, with scriptable faults.
    EcsSimulator(copyimage_canceller::sandbox::ecs_simulator::cli::SimulatorArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::EcsSimulator(args) => tokio::runtime::Runtime::new()?.block_on(args.run()),
    }
}
