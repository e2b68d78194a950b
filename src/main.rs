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
    #[arg(long, global = true)]
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
    /// Import or export one user's feeds as OPML
    Feeds {
        #[command(subcommand)]
        action: FeedsAction,
    },
}

#[derive(Subcommand, Debug)]
enum FeedsAction {
    /// Follow every feed of an OPML file for a user (confirmed when ferry runs)
    Import {
        /// The user's bare JID
        #[arg(long)]
        jid: String,
        /// The OPML file
        file: PathBuf,
    },
    /// Print a user's feeds as OPML on stdout
    Export {
        /// The user's bare JID
        #[arg(long)]
        jid: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An empty FERRY_CONFIG counts as unset, as shells and service files often leave it.
    let path = cli
        .config
        .clone()
        .or_else(|| {
            std::env::var_os("FERRY_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
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
        Command::Feeds { action } => feeds(action, &cfg, store).await,
        Command::Run => {
            let bridges = ferry::bridges::from_config(&cfg, &store)
                .map_err(|e| (2, anyhow::anyhow!("cannot set up the bridges: {e}")))?;
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

/// `ferry feeds import|export`: works on the database alone; a running ferry confirms the
/// imported subscriptions to the user (the feed contacts ask to be added).
async fn feeds(
    action: FeedsAction,
    cfg: &Config,
    store: ferry::store::Store,
) -> Result<(), (u8, anyhow::Error)> {
    use ferry_bridge_api::{Bridge as _, BridgeKind, ImportSource};
    let rss = cfg
        .rss
        .as_ref()
        .ok_or_else(|| (1, anyhow::anyhow!("no [rss] table in the config")))?;
    let bridge = ferry::bridges::rss(rss, &store)
        .map_err(|e| (2, anyhow::anyhow!("cannot set up the rss bridge: {e}")))?;
    let subs = bridge
        .subscriptions()
        .ok_or_else(|| (2, anyhow::anyhow!("the rss bridge has no subscriptions")))?;
    let fail = |e: &dyn std::fmt::Display| (2u8, anyhow::anyhow!("{e}"));
    let jid_of = |raw: &str| {
        ferry::jid::parse(raw)
            .filter(|j| j.resource().is_none() && j.node().is_some())
            .map(|j| ferry::jid::bare(&j))
            .ok_or_else(|| (1u8, anyhow::anyhow!("not a bare JID: {raw}")))
    };
    match action {
        FeedsAction::Import { jid, file } => {
            let jid = jid_of(&jid)?;
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read {}", file.display()))
                .map_err(|e| (1, e))?;
            let addresses = subs
                .read_import(ImportSource::Bytes(bytes))
                .await
                .map_err(|e| (1, anyhow::anyhow!("{}: {e}", file.display())))?;
            let account = store
                .upsert_account(BridgeKind::Rss, &jid, &Default::default())
                .await
                .map_err(|e| fail(&e))?;
            let done = ferry::service::follows::follow_addresses(
                &store, &bridge, &*subs, account, &addresses,
            )
            .await;
            for (addr, why) in &done.failed {
                eprintln!("skipped {addr}: {why}");
            }
            eprintln!(
                "imported {} feed(s) for {jid}; they are confirmed to the user when ferry runs",
                done.ok.len()
            );
            Ok(())
        }
        FeedsAction::Export { jid } => {
            let jid = jid_of(&jid)?;
            let account = store
                .account(BridgeKind::Rss, &jid)
                .await
                .map_err(|e| fail(&e))?
                .ok_or_else(|| (1, anyhow::anyhow!("{jid} follows no feeds")))?;
            let opml = subs.export(account.id).await.map_err(|e| fail(&e))?;
            println!("{opml}");
            Ok(())
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
