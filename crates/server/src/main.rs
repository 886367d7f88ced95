//! `greenlight-server`: serve a region, or act as its health authority.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use greenlight_protocol::{DayNumber, ExposurePolicy};
use greenlight_server::config::Config;
use greenlight_server::Server;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "greenlight-server",
    version,
    about = "Greenlight health-authority server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the region's API and publish batches.
    Serve(ServeArgs),
    /// Health-authority actions against a running server.
    Authority(AuthorityArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres:// URL (default: SQLite in the data directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Region id.
    #[arg(long)]
    region: Option<String>,
    /// Seconds between batches.
    #[arg(long)]
    batch_interval_secs: Option<u64>,
    /// Demo profile: batches every 10 s, padded to 20 entries.
    #[arg(long)]
    demo: bool,
}

#[derive(clap::Args)]
struct AuthorityArgs {
    /// Server base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "GREENLIGHT_SERVER"
    )]
    server: String,
    /// Admin token (default: read from DATA_DIR/admin.token).
    #[arg(long, env = "GREENLIGHT_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data directory holding admin.token.
    #[arg(long, default_value = "greenlight-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    action: AuthorityAction,
}

#[derive(Subcommand)]
enum AuthorityAction {
    /// Issue a one-time verification code for a confirmed patient.
    IssueCode {
        /// Test type, e.g. pcr.
        #[arg(long, default_value = "pcr")]
        test_type: String,
        /// Test date, YYYY-MM-DD.
        #[arg(long)]
        test_date: String,
        /// Symptom onset date, YYYY-MM-DD.
        #[arg(long)]
        onset_date: Option<String>,
    },
    /// Revoke an unused code by its id.
    RevokeCode {
        /// The id printed when the code was issued.
        id: String,
    },
    /// Print aggregate counts.
    Stats,
    /// Sign and publish a policy from a TOML file (SPEC §9.1 fields).
    PublishPolicy {
        /// The policy file.
        file: PathBuf,
    },
    /// Publish pending uploads now.
    PublishNow,
    /// Pull from every recognized peer region now.
    PullPeers,
    /// Print the aggregate counts released for a day (leader aggregator).
    Aggregates {
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        day: String,
        /// The region (default: the server's).
        #[arg(long)]
        region: Option<String>,
    },
    /// Aggregate a finished day now, with the helper (leader aggregator).
    Aggregate {
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        day: String,
    },
}

fn parse_day(text: &str) -> Result<u32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format)
        .with_context(|| format!("{text:?} is not a YYYY-MM-DD date"))?;
    Ok(DayNumber::from_date(date)
        .context("dates before 1970 are not supported")?
        .0)
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref()).context("cannot load configuration")?;
    if args.demo {
        config.batch_interval_secs = 10;
        config.min_batch_entries = 20;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.database_url {
        config.database_url = v;
    }
    if let Some(v) = args.region {
        config.region = v;
    }
    if let Some(v) = args.batch_interval_secs {
        config.batch_interval_secs = v;
    }
    let server = Server::open(config.clone()).await?;
    let public_key = hex::encode(server.state.signing_key.verifying_key().to_bytes());
    if server.new_signing_key {
        eprintln!(
            "created a new signing key in {}",
            config.data_dir.join("signing.key").display()
        );
    }
    if server.new_admin_token {
        eprintln!(
            "created an admin token in {}",
            config.data_dir.join("admin.token").display()
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "greenlight-server for region {} on http://{addr}",
        config.region
    );
    println!("public key {public_key}");
    println!(
        "database {}",
        greenlight_server::redact_url(&config.database())
    );
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    server.serve(listener, shutdown).await
}

async fn authority(args: AuthorityArgs) -> Result<()> {
    let token = match args.token {
        Some(t) => t,
        None => std::fs::read_to_string(args.data_dir.join("admin.token"))
            .with_context(|| {
                format!(
                    "no --token given and cannot read {}",
                    args.data_dir.join("admin.token").display()
                )
            })?
            .trim()
            .to_owned(),
    };
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", args.server.trim_end_matches('/'));
    let request = match args.action {
        AuthorityAction::IssueCode {
            test_type,
            test_date,
            onset_date,
        } => {
            let body = serde_json::json!({
                "test_type": test_type,
                "test_day": parse_day(&test_date)?,
                "onset_day": onset_date.as_deref().map(parse_day).transpose()?,
            });
            client.post(url("/v1/authority/codes")).json(&body)
        }
        AuthorityAction::RevokeCode { id } => {
            client.delete(url(&format!("/v1/authority/codes/{id}")))
        }
        AuthorityAction::Stats => client.get(url("/v1/authority/stats")),
        AuthorityAction::PublishPolicy { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let policy: ExposurePolicy = toml::from_str(&text)
                .with_context(|| format!("{} is not a valid policy", file.display()))?;
            policy
                .validate()
                .with_context(|| format!("{} is not a valid policy", file.display()))?;
            client.put(url("/v1/authority/policy")).json(&policy)
        }
        AuthorityAction::PublishNow => client.post(url("/v1/authority/publish")),
        AuthorityAction::PullPeers => client.post(url("/v1/authority/federation/pull")),
        AuthorityAction::Aggregates { day, region } => {
            let mut query = vec![("day", parse_day(&day)?.to_string())];
            query.extend(region.map(|r| ("region", r)));
            client.get(url("/v1/authority/aggregates")).query(&query)
        }
        AuthorityAction::Aggregate { day } => client
            .post(url("/v1/authority/aggregate"))
            .json(&serde_json::json!({ "day": parse_day(&day)? })),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", args.server))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the server answered {status}: {text}");
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{}", if text.is_empty() { "done" } else { &text }),
    }
    Ok(())
}

fn init_tracing() {
    // Privacy: the default format prints level, target, span fields and the
    // message. Request spans carry the method and route template only.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREENLIGHT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Authority(args) => authority(args).await,
    }
}
