//! The `crm` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crm_events::ids::{LeadId, SiteId};
use crm_events::vault::MasterKey;
use crm_events::{EventStore, StoreError, StoreOptions};
use crm_projections::Projector;

use crm::app::{App, Clock};
use crm::domain::values::{Email, Password, PersonName, SiteName};
use crm::http::input::UserInput;
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

    /// The master key that seals each lead's personal data (from `crm keys
    /// generate`). Without one, the key `crm serve --demo` made beside the
    /// database, if there is one.
    #[arg(long, global = true, env = "CRM_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "CRM_BIND")]
        bind: std::net::SocketAddr,
        /// Seed the "Demo Realty" site (once) and print its sign-ins. Without
        /// `--signing-key`, also sign digests with a key of its own, made once
        /// beside the database (a SQLite file; the working directory otherwise).
        #[arg(long)]
        demo: bool,
        /// The Ed25519 key that signs each site's digests and the export manifests
        /// (PKCS#8 PEM, from `crm keys generate`). Without one, digests are off.
        #[arg(long, env = "CRM_SIGNING_KEY", value_name = "FILE")]
        signing_key: Option<PathBuf>,
        /// Where every digest is also written, one file each: ideally storage the
        /// database's operator cannot rewrite.
        #[arg(long, env = "CRM_DIGEST_DIR", value_name = "DIR")]
        digest_dir: Option<PathBuf>,
        /// Seconds between two rounds of digests (one more at a clean shutdown).
        #[arg(
            long,
            env = "CRM_DIGEST_INTERVAL",
            default_value_t = 60,
            value_name = "SECONDS"
        )]
        digest_interval: u64,
    },
    /// Keys: the master key and the digests' signing key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply the database migrations (every command does when it may; on
    /// PostgreSQL run this as the database's owner), and with `--app-role` let that
    /// role run `crm serve` with least privilege: only SELECT and INSERT on the
    /// events table.
    Migrate {
        /// The PostgreSQL role `crm serve` will connect as.
        #[arg(long, value_name = "ROLE")]
        app_role: Option<String>,
    },
    /// Sites.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Leads.
    Lead {
        #[command(subcommand)]
        command: LeadCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Fill a fresh database with a realistic history and measure the core against
    /// the same database's plain durable insert and in-order scan.
    Bench {
        /// How many events to fill the database with.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Print the report as one JSON object on the last line.
        #[arg(long)]
        json: bool,
        /// How long each timed phase (raw inserts, commands, 16 writers) runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Recompute the tamper-evident hash chain; exit 0 when the log is intact, 1 (naming
    /// the first bad position) when it is not.
    Verify {
        /// Check one site's chain only.
        #[arg(long)]
        site: Option<SiteId>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Also check each site's log against its signed digests in this
        /// directory (a truncated tail, a rewrite with recomputed hashes, an
        /// inserted or removed event, a removed, altered, reordered or foreign
        /// digest). Needs `--public-key`.
        #[arg(long, value_name = "DIR", requires = "public_key")]
        digests: Option<PathBuf>,
        /// The public key the digests must be signed with (SPKI PEM).
        #[arg(long, value_name = "FILE", requires = "digests")]
        public_key: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site and its owner.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner_name: String,
        #[arg(long)]
        owner_email: String,
        /// The owner's password (at least 8 characters).
        #[arg(long, env = "CRM_OWNER_PASSWORD", hide_env_values = true)]
        owner_password: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeadCommand {
    /// Erase a lead's personal data (as the operator, with a reason): its key is
    /// destroyed, its values read as erased everywhere, and the tables that held
    /// them are cleaned (PostgreSQL: VACUUM; SQLite: its write-ahead log emptied
    /// into the file). Erasing it again does nothing more.
    Erase {
        #[arg(long)]
        site: SiteId,
        #[arg(long)]
        lead: LeadId,
        /// Why (recorded: keep personal data out of it).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user of a site (as the operator).
    Create {
        #[arg(long)]
        site: SiteId,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        /// admin, agent or auditor.
        #[arg(long)]
        role: String,
        /// At least 8 characters.
        #[arg(long, env = "CRM_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make the keys `crm serve` needs, in DIR, never over a key already there:
    /// `master-key` (seals each lead's personal data; readable by its owner
    /// only; lose it and that data is lost) and the Ed25519 pair that signs
    /// digests, `signing-key.pem` (readable by its owner only) and
    /// `public-key.pem`, for auditors.
    Generate {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write a site's changes to standard output, as CSV or NDJSON, in log order.
    Export {
        #[arg(long)]
        site: SiteId,
        /// csv or ndjson.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Only changes made while impersonating.
        #[arg(long)]
        impersonated: bool,
        /// Only changes up to this position (default: the head): the same
        /// arguments and position always give the same bytes.
        #[arg(long, value_name = "POSITION")]
        up_to: Option<i64>,
        /// Also write the export's signed manifest here (needs `--signing-key`).
        #[arg(long, value_name = "FILE", requires = "signing_key")]
        manifest: Option<PathBuf>,
        /// The key that signs the manifest.
        #[arg(long, env = "CRM_SIGNING_KEY", value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
    /// Check an exported file against its signed manifest and the public key:
    /// exit 0 when it is the export the manifest signed, 1 (saying what differs)
    /// otherwise.
    VerifyExport {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    App(#[from] crm::app::AppError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Key(#[from] crm_events::digest::KeyError),
}

/// Writes to standard output. A reader that has gone (`crm verify | head -1`) is not
/// an error: what it did not read is dropped, and the command still ends with its own
/// exit code.
fn write_out(text: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    use std::io::Write;
    match std::io::stdout().lock().write_fmt(text) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// `println!` through [`write_out`].
macro_rules! say {
    ($($arg:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// Parses the arguments and runs the command.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    // What needs no database.
    match &cli.command {
        Command::Keys {
            command: KeysCommand::Generate { out },
        } => {
            let mut made = false;
            if !out.join("master-key").exists() {
                let path = MasterKey::generate_file(out)?;
                let key = MasterKey::read(&path)?;
                say!(
                    "master key {}: {} (keep it secret, and safe: without it the leads' personal data cannot be read)",
                    key.id(),
                    path.display()
                );
                made = true;
            }
            if !out.join("signing-key.pem").exists() {
                let key = crm_events::digest::SigningKey::generate()?;
                let (private, public) = key.write_pair(out)?;
                say!(
                    "signing key {}: private {} (keep it secret), public {}",
                    key.id(),
                    private.display(),
                    public.display()
                );
                made = true;
            }
            if !made {
                return Err(CliError::Usage(format!(
                    "{} already holds both keys: nothing was made",
                    out.display()
                )));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Audit {
            command:
                AuditCommand::VerifyExport {
                    file,
                    manifest,
                    public_key,
                },
        } => return verify_export(file, manifest, public_key),
        _ => {}
    }
    let demo = matches!(cli.command, Command::Serve { demo: true, .. });
    let master_key = master_key(cli.master_key_file.as_deref(), demo, &cli.database_url)?;
    let store = EventStore::open_with(
        &cli.database_url,
        StoreOptions {
            master_key: master_key.clone(),
            ..StoreOptions::default()
        },
    )
    .await?;
    match cli.command {
        Command::Keys { .. }
        | Command::Audit {
            command: AuditCommand::VerifyExport { .. },
        } => Ok(ExitCode::SUCCESS),
        Command::Serve {
            bind,
            demo,
            signing_key,
            digest_dir,
            digest_interval,
        } => {
            let proof = Proof {
                signing_key,
                digest_dir,
                interval: std::time::Duration::from_secs(digest_interval.max(1)),
            };
            serve(store, bind, demo, proof, &cli.database_url).await
        }
        Command::Migrate { app_role } => {
            crm::app::migrate(&store).await?;
            say!("migrations applied");
            if let Some(role) = app_role {
                let mut disposable = vec!["projection_checkpoints", "projection_deferred_indexes"];
                for projection in crm_projections::all() {
                    disposable.extend(projection.tables());
                }
                store.grant_least_privilege(&role, &disposable).await?;
                say!("{role} may serve: SELECT and INSERT on events, and owns the projections' tables");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Site {
            command:
                SiteCommand::Create {
                    name,
                    owner_name,
                    owner_email,
                    owner_password,
                },
        } => {
            let app = App::start(store, Clock::system()).await?;
            let usage =
                |field: &'static str| move |why: String| CliError::Usage(format!("{field}: {why}"));
            let created = app
                .create_site(
                    SiteName::parse(&name).map_err(usage("--name"))?,
                    PersonName::parse(&owner_name).map_err(usage("--owner-name"))?,
                    Email::parse(&owner_email).map_err(usage("--owner-email"))?,
                    Password::parse(&owner_password).map_err(usage("--owner-password"))?,
                )
                .await?;
            // Fold what this process wrote before it exits.
            app.settle().await?;
            say!(
                "site {} created; owner {} <{owner_email}>",
                created.site_id,
                created.owner_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Create {
                    site,
                    name,
                    email,
                    role,
                    password,
                },
        } => {
            let app = App::start(store, Clock::system()).await?;
            let input = UserInput {
                name,
                email,
                role,
                password,
            };
            let (name, email, role, password) = input.parse().map_err(|errors| {
                CliError::Usage(
                    errors
                        .iter()
                        .map(|e| format!("--{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            app.site_row(&app.operator(site)).await?;
            let (user, _) = app
                .create_user(&app.operator(site), name, email, role, password)
                .await?;
            app.settle().await?;
            say!(
                "user {} created: {} <{}> ({})",
                user.id,
                user.name,
                user.email,
                user.role
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Lead {
            command: LeadCommand::Erase { site, lead, reason },
        } => {
            let reason = crm::domain::values::Reason::parse(&reason)
                .map_err(|why| CliError::Usage(format!("--reason: {why}")))?;
            let app = App::start(store, Clock::system()).await?;
            let erasure = app.erase_lead(&app.operator(site), lead, reason).await?;
            app.settle().await?;
            let cleaned = app.scrub_erased().await?;
            say!(
                "lead {} erased at {} (position {}); cleaned {}",
                erasure.id,
                erasure.erased_at.to_rfc3339(),
                erasure.position.0,
                cleaned
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command:
                AuditCommand::Export {
                    site,
                    format,
                    impersonated,
                    up_to,
                    manifest,
                    signing_key,
                },
        } => {
            let signed = match (manifest, signing_key) {
                (Some(manifest), Some(key)) => Some((manifest, key)),
                _ => None,
            };
            export(store, site, &format, impersonated, up_to, signed).await
        }
        Command::Bench {
            events,
            json,
            seconds,
        } => {
            drop(store);
            let phase = std::time::Duration::from_secs(seconds.max(1));
            let report = crate::bench::run(&cli.database_url, events, phase, master_key).await?;
            write_out(format_args!("{}", crate::bench::describe(&report)))?;
            if json {
                say!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            site,
            json,
            digests,
            public_key,
        } => {
            let chain = verify(&store, site, json).await?;
            let proof = match (digests, public_key) {
                (Some(dir), Some(key)) => verify_digests(&store, site, &dir, &key, json).await?,
                _ => ExitCode::SUCCESS,
            };
            Ok(if chain == ExitCode::SUCCESS {
                proof
            } else {
                chain
            })
        }
        Command::Rebuild { projections } => rebuild(store, &projections).await,
    }
}

/// How often `crm serve` looks for impersonations whose end is due (the end is
/// recorded within this of the moment it happens).
const ENDINGS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often `crm serve` verifies what was appended to the log since last time.
const CHAIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How `crm serve` signs digests.
#[derive(Debug)]
struct Proof {
    signing_key: Option<PathBuf>,
    digest_dir: Option<PathBuf>,
    interval: std::time::Duration,
}

/// Where `--demo` keeps its own key and digests: beside a SQLite database file;
/// for PostgreSQL, in the user's data directory (`$XDG_DATA_HOME/crm/<database>`,
/// by default `~/.local/share/crm/<database>`).
fn beside_the_database(database_url: &str) -> (PathBuf, PathBuf) {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|path| !path.is_empty() && !path.starts_with(":memory:"));
    if let Some(path) = file {
        return (
            PathBuf::from(format!("{path}.keys")),
            PathBuf::from(format!("{path}.digests")),
        );
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    let database: String = database_url
        .rsplit('/')
        .next()
        .unwrap_or("crm")
        .split('?')
        .next()
        .unwrap_or("crm")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = data.join("crm").join(database);
    (base.join("keys"), base.join("digests"))
}

/// The master key: the file given; else the one `--demo` keeps beside the
/// database (made, for `--demo`, when missing).
fn master_key(
    given: Option<&Path>,
    demo: bool,
    database_url: &str,
) -> Result<Option<MasterKey>, CliError> {
    if let Some(path) = given {
        return Ok(Some(MasterKey::read(path)?));
    }
    let (keys, _) = beside_the_database(database_url);
    let path = keys.join("master-key");
    if demo && !path.exists() {
        MasterKey::generate_file(&keys)?;
    }
    Ok(if path.exists() {
        Some(MasterKey::read(&path)?)
    } else {
        None
    })
}

/// The signing key and digest directory `crm serve` runs with, if any; `--demo`
/// without a key makes (once) and uses its own.
fn signer(
    proof: &Proof,
    demo: bool,
    database_url: &str,
) -> Result<Option<(crm_events::digest::SigningKey, Option<PathBuf>)>, CliError> {
    use crm_events::digest::SigningKey;
    if let Some(path) = &proof.signing_key {
        return Ok(Some((SigningKey::read(path)?, proof.digest_dir.clone())));
    }
    if !demo {
        return Ok(None);
    }
    let (keys, digests) = beside_the_database(database_url);
    let path = keys.join("signing-key.pem");
    if !path.exists() {
        SigningKey::generate()?.write_pair(&keys)?;
    }
    let dir = proof.digest_dir.clone().unwrap_or(digests);
    Ok(Some((SigningKey::read(&path)?, Some(dir))))
}

async fn serve(
    store: EventStore,
    bind: std::net::SocketAddr,
    demo: bool,
    proof: Proof,
    database_url: &str,
) -> Result<ExitCode, CliError> {
    if !store.seals() {
        return Err(CliError::Usage(match store.master_key_id().await? {
            Some(id) => format!(
                "this database's leads' personal data is sealed with master key {id}: give its file with --master-key-file"
            ),
            None => "crm serve needs a master key to seal leads' personal data: give --master-key-file FILE (crm keys generate --out DIR makes one), or use --demo".to_owned(),
        }));
    }
    let mut app = App::start(store, Clock::system()).await?;
    let signing = signer(&proof, demo, database_url)?;
    let mut demo_keys = None;
    let signs = signing.is_some();
    match signing {
        Some((key, dir)) => {
            match &dir {
                Some(dir) => tracing::info!(
                    key_id = key.id(),
                    dir = %dir.display(),
                    every_secs = proof.interval.as_secs(),
                    "digests on: each site's log is signed, kept in the database and written to the digest directory"
                ),
                None => tracing::warn!(
                    key_id = key.id(),
                    "digests kept in the database only: give --digest-dir to keep them outside it too"
                ),
            }
            if demo && proof.signing_key.is_none() {
                let (keys, _) = beside_the_database(database_url);
                demo_keys = Some(format!(
                    "Digests signed with key {} (public key {}), written to {}",
                    key.id(),
                    keys.join("public-key.pem").display(),
                    dir.as_deref().unwrap_or(Path::new("-")).display()
                ));
            }
            app = app.with_signer(key, dir);
        }
        None => tracing::warn!("digests are off: no --signing-key (crm keys generate makes one)"),
    }
    if demo {
        let seeded = crate::demo::seed(&app).await?;
        say!(
            "Demo Realty {}. Sign in with any of these (password `{}`):",
            if seeded { "seeded" } else { "is already there" },
            crate::demo::PASSWORD
        );
        for (email, role) in crate::demo::LOGINS {
            say!("  {email:<24} {role}");
        }
        if let Some(note) = &demo_keys {
            say!("{note}");
        }
        if let Some(id) = app.store().master_key_id().await? {
            say!("Leads' personal data sealed with master key {id} (crm keys generate makes one for production; --master-key-file names it)");
        }
    }
    let listener = tokio::net::TcpListener::bind(bind).await?;
    say!("crm listening on http://{}", listener.local_addr()?);
    // Impersonations that expire or lose their right are recorded as ended when
    // it happens, requests or not.
    let endings = app.watch_endings(ENDINGS_INTERVAL);
    // The chain is verified now (in the background) and then each minute, from
    // where the last round stopped.
    let chain = app.watch_chain(CHAIN_INTERVAL);
    let digests = signs.then(|| app.watch_digests(proof.interval));
    let router = crm::http::router(crm::http::AppState { app: app.clone() });
    // The peer's address counts failed sign-ins per client.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    endings.abort();
    chain.abort();
    if let Some(digests) = digests {
        digests.abort();
        // What the last requests appended gets its digest before the exit.
        let made = app.write_digests().await?;
        tracing::info!(digests = made.len(), "digests signed at shutdown");
    }
    // Fold what the last requests wrote before the process exits.
    app.settle().await?;
    say!("crm stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM: stop accepting, finish the requests in flight, exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

async fn export(
    store: EventStore,
    site: SiteId,
    format: &str,
    impersonated: bool,
    up_to: Option<i64>,
    signed: Option<(PathBuf, PathBuf)>,
) -> Result<ExitCode, CliError> {
    use futures_util::StreamExt;
    use std::io::Write;
    let format = crm::export::Format::parse(format)
        .ok_or_else(|| CliError::Usage(format!("--format {format}: csv or ndjson")))?;
    let key = match &signed {
        Some((_, key)) => Some(crm_events::digest::SigningKey::read(key)?),
        None => None,
    };
    let head = store.head().await?.0;
    let up_to = up_to.unwrap_or(head);
    if up_to < 0 || up_to > head {
        return Err(CliError::Usage(format!(
            "--up-to {up_to}: a position from 0 to the head ({head})"
        )));
    }
    // Bring the projections up to date before reading the trail.
    let app = App::start(store.clone(), Clock::system()).await?;
    let filter = crm_projections::audit_trail::ChangeFilter {
        impersonated: impersonated.then_some(true),
        order: crm_projections::query::Order::OldestFirst,
        up_to: Some(up_to),
        ..Default::default()
    };
    if let (Some((path, _)), Some(key)) = (&signed, &key) {
        let (rows, sha256) =
            crm::export::measure(store.database().clone(), site, filter.clone(), format)
                .await
                .map_err(crm::app::AppError::from)?;
        let body = crm::export::ManifestBody {
            site_id: site,
            filter: crm::export::filter_params(&filter),
            format: format.name().to_owned(),
            up_to_position: up_to,
            rows,
            sha256,
            signed_at: app.clock().now(),
            key_id: key.id().to_owned(),
        };
        let signature = key.sign(&body.canonical());
        let manifest = crm::export::Manifest { body, signature };
        let mut text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        text.push('\n');
        std::fs::write(path, text)?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut chunks = Box::pin(crm::export::chunks(
        store.database().clone(),
        site,
        filter,
        format,
    ));
    let gone = |error: &std::io::Error| error.kind() == std::io::ErrorKind::BrokenPipe;
    while let Some(chunk) = chunks.next().await {
        match out.write_all(&chunk.map_err(crm::app::AppError::from)?) {
            // The reader stopped reading: nothing more to do.
            Err(error) if gone(&error) => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
    }
    match out.flush() {
        Err(error) if !gone(&error) => Err(error.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn rebuild(store: EventStore, names: &[String]) -> Result<ExitCode, CliError> {
    // Refused before anything is emptied: the folds could not open the leads'
    // personal values.
    if !store.seals() {
        if let Some(id) = store.master_key_id().await? {
            return Err(CliError::Usage(format!(
                "this database's leads' personal data is sealed with master key {id}: give its file with --master-key-file"
            )));
        }
    }
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
    say!(
        "rebuilt {} up to position {reached} in {seconds:.1} s ({:.0} events/s)",
        chosen.join(", "),
        reached.0 as f64 / seconds.max(f64::EPSILON)
    );
    Ok(ExitCode::SUCCESS)
}

/// `crm verify --digests DIR --public-key FILE`: every site (or the one asked
/// for) against its digest files, and the database's digests against the files.
async fn verify_digests(
    store: &EventStore,
    site: Option<SiteId>,
    dir: &Path,
    key: &Path,
    json: bool,
) -> Result<ExitCode, CliError> {
    use crm_events::digest;
    let key = digest::PublicKey::read(key)?;
    let files = digest::read_dir(dir, site).map_err(CliError::Usage)?;
    let mut sites: Vec<SiteId> = match site {
        Some(site) => vec![site],
        None => store
            .chain_heads(None)
            .await?
            .into_iter()
            .map(|h| h.site_id)
            .chain(files.iter().map(|d| d.body.site_id))
            .collect(),
    };
    sites.sort();
    sites.dedup();
    let mut all_ok = true;
    for site in sites {
        let of_site: Vec<_> = files
            .iter()
            .filter(|d| d.body.site_id == site)
            .cloned()
            .collect();
        let stored = store.all_digests(site).await?;
        let report = match digest::compare(&of_site, &stored) {
            Some(problem) => digest::DigestReport::failed(&of_site, problem),
            None if of_site.is_empty() => digest::DigestReport::failed(
                &of_site,
                format!("no digest of site {site} in {}", dir.display()),
            ),
            None => store.verify_digests(site, of_site, &key).await?,
        };
        all_ok &= report.ok;
        if json {
            say!(
                "{}",
                serde_json::json!({"site_id": site, "digests": report})
            );
        } else if report.ok {
            say!(
                "site {site}: {} digests signed by key {} hold; the log is complete up to position {} (signed {})",
                report.digests,
                key.id(),
                report.latest_to_position.unwrap_or(0),
                report
                    .latest_signed_at
                    .map_or_else(String::new, |t| t.to_rfc3339())
            );
        } else {
            say!(
                "TAMPERED: site {site}: {}",
                report.problem.as_deref().unwrap_or("unknown")
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `crm audit verify-export FILE --manifest FILE --public-key FILE`.
fn verify_export(file: &Path, manifest: &Path, key: &Path) -> Result<ExitCode, CliError> {
    let key = crm_events::digest::PublicKey::read(key)?;
    let bytes = std::fs::read(file)?;
    let manifest: crm::export::Manifest = serde_json::from_str(&std::fs::read_to_string(manifest)?)
        .map_err(|e| CliError::Usage(format!("{}: not a manifest ({e})", manifest.display())))?;
    match crm::export::verify_export(&bytes, &manifest, &key) {
        Ok(summary) => {
            say!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(problem) => {
            say!("TAMPERED: {}: {problem}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}

async fn verify(
    store: &EventStore,
    site: Option<SiteId>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let report = store.verify(site).await?;
    if json {
        say!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else if report.ok {
        say!(
            "ok: {} events checked, the hash chain is intact",
            report.events_checked
        );
        for head in store.chain_heads(site).await? {
            say!(
                "site {}: {} events, head at position {} = {}",
                head.site_id,
                head.event_count,
                head.last_position,
                hex::encode(head.last_hash)
            );
        }
    } else {
        say!(
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
