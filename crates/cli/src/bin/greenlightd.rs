//! `greenlightd`: the phone daemon. Broadcasts rotating EphIDs, records
//! the ones it hears into its encrypted store, syncs with its servers,
//! and answers the `greenlight` CLI on a local socket.

use anyhow::Context as _;
use clap::Parser;
use greenlight_daemon::runtime::{self, DaemonConfig, RadioChoice};
use greenlight_daemon::sync::ServerConfig;
use greenlight_protocol::RegionId;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Greenlight phone daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see the README for the fields).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the encrypted store lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Local API socket path.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Home region.
    #[arg(long)]
    region: Option<String>,
    /// Home server base URL (with --public-key): replaces the configured servers.
    #[arg(long, requires = "public_key")]
    server: Option<String>,
    /// The home server's ed25519 public key, hex (from its /v1/public-key,
    /// checked out of band).
    #[arg(long, requires = "server")]
    public_key: Option<String>,
    /// `bluez`, `simulated` (this phone alone on a simulated air: no
    /// hardware needed, nothing heard) or `none`.
    #[arg(long, value_parser = ["bluez", "simulated", "none"])]
    radio: Option<String>,
    /// Seconds between syncs.
    #[arg(long)]
    sync_interval_secs: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn config(args: &Args) -> anyhow::Result<DaemonConfig> {
    let mut c = DaemonConfig::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(s) = &args.socket {
        c.socket = Some(s.clone());
    }
    if let Some(r) = &args.region {
        c.region = r.clone();
    }
    if let (Some(url), Some(key)) = (&args.server, &args.public_key) {
        c.servers = vec![ServerConfig {
            url: url.clone(),
            region: RegionId::new(&c.region).context("--region")?,
            public_key: key.clone(),
        }];
    }
    if let Some(r) = &args.radio {
        c.radio = match r.as_str() {
            "none" => RadioChoice::None,
            "simulated" => RadioChoice::Simulated,
            _ => RadioChoice::Bluez,
        };
    }
    if let Some(s) = args.sync_interval_secs {
        c.sync_interval_secs = s;
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREENLIGHT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = config(&args)?;
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    config.validate()?;
    let phone = runtime::open_phone(&config)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    match config.radio {
        RadioChoice::None => {
            tracing::info!("no radio: syncing and answering the CLI only");
            runtime::run::<greenlight_ble::sim::SimRadio>(config, phone, None, shutdown).await?;
        }
        RadioChoice::Simulated => {
            tracing::info!("simulated radio: this phone alone on a simulated air");
            let air = greenlight_ble::sim::SimulatedAir::new(rand::random());
            let radio = air.add_phone(
                greenlight_ble::sim::PhoneId(1),
                (0.0, 0.0),
                config.tx_power_dbm,
            );
            runtime::run(config, phone, Some(radio), shutdown).await?;
        }
        RadioChoice::Bluez => {
            let radio = greenlight_ble::bluez::BluezRadio::new()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the Bluetooth radio cannot be used ({e}); is bluetoothd running and an \
                     adapter present? Without one, use --radio simulated or --radio none"
                    )
                })?;
            tracing::info!(adapter = radio.adapter_name(), "BlueZ radio");
            runtime::run(config, phone, Some(radio), shutdown).await?;
        }
    }
    Ok(())
}
