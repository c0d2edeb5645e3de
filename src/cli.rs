//! The `crm` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crm_events::ids::SiteId;
use crm_events::{EventStore, StoreError};

/// Event-sourced CRM core with an audited "Log in as user".
#[derive(Debug, Parser)]
#[command(name = "crm", version, about)]
pub struct Cli {
    /// The database: `sqlite://PATH` (the embedded default) or `postgres://...`.
    #[arg(
        long,
        global = true,
        env = "CRM_DATABASE_URL",
        default_value = "sqlite://crm.db"
    )]
    pub database_url: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Recompute the tamper-evident hash chain; exit 0 when the log is intact, 1 (naming
    /// the first bad position) when it is not.
    Verify {
        /// Check one site's chain only.
        #[arg(long)]
        site: Option<SiteId>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the arguments and runs the command.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("crm: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("crm: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, StoreError> {
    let store = EventStore::open(&cli.database_url).await?;
    match cli.command {
        Command::Verify { site, json } => verify(&store, site, json).await,
    }
}

async fn verify(
    store: &EventStore,
    site: Option<SiteId>,
    json: bool,
) -> Result<ExitCode, StoreError> {
    let report = store.verify(site).await?;
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else if report.ok {
        println!(
            "ok: {} events checked, the hash chain is intact",
            report.events_checked
        );
        for head in store.chain_heads(site).await? {
            println!(
                "site {}: {} events, head at position {} = {}",
                head.site_id,
                head.event_count,
                head.last_position,
                hex::encode(head.last_hash)
            );
        }
    } else {
        println!(
            "TAMPERED: first bad position {}: {}",
            report
                .first_bad_position
                .map_or_else(|| "?".to_owned(), |p| p.to_string()),
            report.problem.as_deref().unwrap_or("unknown")
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
