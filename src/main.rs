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
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
