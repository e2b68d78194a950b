//! The `ferry` command: parses the command line, sets up logging, loads the config and
//! hands over to [`ferry::app`]. The only place `anyhow` is used.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferry::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "An XMPP gateway to email, SMS and RSS/Atom feeds"
)]
struct Cli {
    /// The config file [default: $FERRY_CONFIG, then ./ferry.toml]
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect every configured bridge to the XMPP server and serve until SIGINT/SIGTERM
    Run,
    /// Validate the config and print every problem
    Check,
    /// Apply database migrations
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("ferry.toml"));
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {} problem(s):", path.display(), errors.0.len());
            for p in &errors.0 {
                eprintln!("  {p}");
            }
            return ExitCode::from(1);
        }
    };
    init_tracing(&cfg.log.level);
    if let Command::Check = cli.command {
        eprintln!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli.command, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            tracing::error!("{e:#}");
            eprintln!("ferry: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(command: Command, cfg: Config) -> Result<(), (u8, anyhow::Error)> {
    let store = ferry::app::open_store(&cfg)
        .await
        .context("cannot open the database")
        .map_err(|e| (2, e))?;
    match command {
        Command::Migrate => {
            tracing::info!("database is up to date");
            Ok(())
        }
        Command::Check => Ok(()),
        Command::Run => {
            let bridges = ferry::bridges::from_config(&cfg);
            if bridges.is_empty() {
                return Err((1, anyhow::anyhow!("no bridge configured")));
            }
            let running = ferry::app::start(&cfg, store, bridges)
                .await
                .map_err(|e| (e.exit_code() as u8, e.into()))?;
            let stop = running.stopper();
            tokio::spawn(async move {
                let sig = wait_for_signal().await;
                tracing::info!("{sig}: shutting down");
                stop.send_replace(true);
            });
            running
                .wait()
                .await
                .map_err(|e| (e.exit_code() as u8, e.into()))
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming which.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return "";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
