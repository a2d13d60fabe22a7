//! The `copyimage-canceller` command line: run | cancel | crd | ecs-simulator | demo.
#![forbid(unsafe_code)]

use std::process::ExitCode;

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
    /// Send one signed CancelCopyImage from the shell, with the controller's retry policy.
    Cancel(copyimage_canceller::cancel::CancelArgs),
    /// A local CancelCopyImage endpoint that checks signatures like ECS, with scriptable faults.
    EcsSimulator(copyimage_stand_ins::ecs_simulator::cli::SimulatorArgs),
    /// Run the controller: watch CopyImageCancellations and send CancelCopyImage for them.
    Run(copyimage_canceller::controller::run::RunArgs),
    /// Print the CustomResourceDefinitions (CopyImageCancellation, RamRoleSelector) as YAML.
    Crd(CrdArgs),
    /// The whole controller path on embedded stand-ins: no cluster or cloud account needed.
    Demo(copyimage_canceller::demo::DemoArgs),
    /// Show which operator credentials the chain selects (env, RRSA, ECS RAM role) and fetch them once; never prints a secret.
    Credentials(copyimage_canceller::identity::cli::CredentialsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Cancel(args) => copyimage_canceller::cancel::run(args).await,
            Command::EcsSimulator(args) => exit_code(args.run().await),
            Command::Run(args) => exit_code(copyimage_canceller::controller::run::run(args).await),
            Command::Crd(args) => exit_code(print_crd(&args)),
            Command::Demo(args) => exit_code(copyimage_canceller::demo::run(args).await),
            Command::Credentials(args) => copyimage_canceller::identity::cli::run(args).await,
        }
    })
}

/// Exit status of a subcommand that reports errors as `anyhow::Error`.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Arguments of `crd`.
#[derive(clap::Args, Debug)]
struct CrdArgs {
    /// Print only this CRD, by plural (`copyimagecancellations`, `ramroleselectors`): the
    /// file `crds/<plural>.yaml` holds exactly this output. Default: both, as one YAML stream.
    #[arg(long, value_name = "PLURAL", value_parser = ["copyimagecancellations", "ramroleselectors"])]
    name: Option<String>,
}

/// `crd`: the YAML that `crds/` holds (one file per CRD, `--name` prints one).
fn print_crd(args: &CrdArgs) -> anyhow::Result<()> {
    let cic = copyimage_canceller::resource::crd_yaml()?;
    let selector = copyimage_canceller::role_selector::crd_yaml()?;
    match args.name.as_deref() {
        Some("copyimagecancellations") => print!("{cic}"),
        Some(_) => print!("{selector}"),
        None => print!("{cic}---\n{selector}"),
    }
    Ok(())
}
