//! The `crm` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crm_events::ids::SiteId;
use crm_events::{EventStore, StoreError};
use crm_projections::Projector;
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Empty the projections and fold the whole event log into them again, with a
    /// progress bar. Safe to stop at any moment and run again.
    Rebuild {
        /// Rebuild only this projection (repeatable): users, lead_manager, settings,
        /// notifications, audit_trail. All of them by default.
        #[arg(long = "projection", value_name = "NAME")]
        projections: Vec<String>,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
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

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let store = EventStore::open(&cli.database_url).await?;
    match cli.command {
        Command::Verify { site, json } => Ok(verify(&store, site, json).await?),
        Command::Rebuild { projections } => rebuild(store, &projections).await,
    }
}

async fn rebuild(store: EventStore, names: &[String]) -> Result<ExitCode, CliError> {
    let projector = Projector::open(store.clone(), crm_projections::all()).await?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let chosen = projector.resolve(&names).map_err(CliError::Usage)?;
    let head = store.head().await?;
    let bar = ProgressBar::new(u64::try_from(head.0).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "rebuilding [{bar:40}] {pos}/{len} events, {per_sec}, {elapsed_precise} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let reached = projector
        .rebuild(&chosen, &|position| {
            bar.set_position(u64::try_from(position.0).unwrap_or(0))
        })
        .await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} up to position {reached} in {seconds:.1} s ({:.0} events/s)",
        chosen.join(", "),
        reached.0 as f64 / seconds.max(f64::EPSILON)
    );
    Ok(ExitCode::SUCCESS)
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
