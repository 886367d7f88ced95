//! The local API between `greenlightd` and the `greenlight` CLI: one JSON
//! request per line on a Unix socket (mode 0600, in a 0700 directory), one
//! JSON answer per line. Only the user who runs the daemon can connect.

use crate::phone::Export;
use crate::sync::{lock, Consent, SharedPhone, SyncReport, Syncer, UploadReceipt};
use crate::{Error, Result};
use greenlight_protocol::{Colour, DayNumber, Status, Timestamp};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Longest request line accepted (a report with its consent is far smaller).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request from the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The colour, its end date and the reason.
    Status,
    /// Today's check-in.
    CheckIn,
    /// Upload the user's keys with a verification code, as consented.
    ReportPositive {
        /// The code from the health authority.
        code: String,
        /// What the user agreed to upload.
        consent: Consent,
    },
    /// Fetch the policy and new batches now.
    Sync,
    /// Everything stored about the user.
    Export,
    /// Delete everything.
    Forget {
        /// Must be true: the CLI asks the user first.
        confirm: bool,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// See [`Request::Status`].
    Status(Box<StatusView>),
    /// See [`Request::CheckIn`].
    CheckedIn {
        /// The day checked in.
        day: DayNumber,
        /// False if the user had already checked in that day.
        new: bool,
    },
    /// See [`Request::ReportPositive`].
    Reported(UploadReceipt),
    /// See [`Request::Sync`].
    Synced(SyncReport),
    /// See [`Request::Export`].
    Exported(Box<Export>),
    /// See [`Request::Forget`].
    Forgotten,
    /// The request failed.
    Error {
        /// Kind of error (see `Error::code`).
        code: String,
        /// What went wrong.
        message: String,
    },
}

/// The status as the CLI shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The day the status is for.
    pub today: DayNumber,
    /// The colour.
    pub colour: Colour,
    /// The first green day, if not green.
    pub green_on: Option<DayNumber>,
    /// Whether the user has checked in today.
    pub checked_in_today: bool,
    /// The reason, in words.
    pub explanation: String,
    /// The full structured status.
    pub status: Status,
    /// Serial of the policy in force.
    pub policy_serial: u32,
    /// Whether that policy came signed from the home server.
    pub policy_signed: bool,
    /// Sightings stored.
    pub sightings: usize,
    /// Exposures matched.
    pub exposures: usize,
}

/// What a request handler needs.
#[derive(Clone)]
pub struct Context {
    /// The phone.
    pub phone: SharedPhone,
    /// Its servers.
    pub syncer: Syncer,
    /// The clock (the wall clock in the daemon).
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("syncer", &self.syncer)
            .finish_non_exhaustive()
    }
}

/// The status of `phone` at `today`.
pub fn status_view(phone: &SharedPhone, today: DayNumber) -> Result<StatusView> {
    let p = lock(phone);
    let status = p.status(today);
    let checked_in_today = p.checkins().any(|d| d == today);
    Ok(StatusView {
        today,
        colour: status.colour,
        green_on: status.green_on,
        checked_in_today,
        explanation: status.to_string(),
        policy_serial: p.policy().serial,
        policy_signed: p.policy_signed(),
        sightings: p.sighting_count()?,
        exposures: p.exposures().len(),
        status,
    })
}

/// Carries out one request.
pub async fn handle(ctx: &Context, request: Request) -> Response {
    let now = (ctx.clock)();
    let outcome = match request {
        Request::Status => {
            status_view(&ctx.phone, now.day()).map(|s| Response::Status(Box::new(s)))
        }
        Request::CheckIn => lock(&ctx.phone)
            .check_in(now.day())
            .map(|new| Response::CheckedIn {
                day: now.day(),
                new,
            })
            .map_err(Error::from),
        Request::ReportPositive { code, consent } => ctx
            .syncer
            .report_positive(&ctx.phone, &code, &consent, now)
            .await
            .map(Response::Reported),
        Request::Sync => Ok(Response::Synced(ctx.syncer.sync(&ctx.phone, now).await)),
        Request::Export => lock(&ctx.phone)
            .export(now)
            .map(|e| Response::Exported(Box::new(e)))
            .map_err(Error::from),
        Request::Forget { confirm: false } => Err(Error::Refused(
            "forget deletes everything; it needs confirm = true".into(),
        )),
        Request::Forget { confirm: true } => lock(&ctx.phone)
            .forget()
            .map(|()| Response::Forgotten)
            .map_err(Error::from),
    };
    outcome.unwrap_or_else(|e| Response::Error {
        code: e.code().into(),
        message: e.to_string(),
    })
}

/// Binds the socket at `path` with mode 0600 (its directory is made 0700
/// if the daemon creates it). A stale socket from a killed daemon is
/// replaced; a live one is refused.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    let api_err = |reason: String| Error::Api {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| api_err(format!("cannot create: {e}")))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| api_err(e.to_string()))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(api_err("another greenlightd is listening there".into()));
        }
        std::fs::remove_file(path).map_err(|e| api_err(format!("cannot replace: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| api_err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| api_err(e.to_string()))?;
    Ok(listener)
}

/// Answers requests until `shutdown`; each connection may send several.
pub async fn serve(listener: UnixListener, ctx: Context, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "local API accept failed");
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &ctx).await {
                tracing::debug!(error = %e, "local API connection ended");
            }
        });
    }
}

async fn connection(stream: UnixStream, ctx: &Context) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_REQUEST_BYTES {
            Response::Error {
                code: "refused".into(),
                message: format!("request over {MAX_REQUEST_BYTES} bytes"),
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => handle(ctx, request).await,
                Err(e) => Response::Error {
                    code: "bad_request".into(),
                    message: format!("not a request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|e| {
            format!(r#"{{"result":"error","code":"internal","message":"{e}"}}"#).into_bytes()
        });
        out.push(b'\n');
        write.write_all(&out).await?;
        if line.len() > MAX_REQUEST_BYTES {
            return Ok(());
        }
    }
}

/// Sends one request to the daemon at `socket` and waits for the answer.
pub async fn call(socket: &Path, request: &Request) -> Result<Response> {
    let api_err = |reason: String| Error::Api {
        path: socket.display().to_string(),
        reason,
    };
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        api_err(format!(
            "cannot connect ({e}); is greenlightd running? Start it with `greenlightd`"
        ))
    })?;
    let (read, mut write) = stream.into_split();
    let mut body = serde_json::to_vec(request).map_err(Error::internal)?;
    body.push(b'\n');
    write
        .write_all(&body)
        .await
        .map_err(|e| api_err(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(|e| api_err(e.to_string()))?;
    serde_json::from_str(&line).map_err(|e| api_err(format!("unreadable answer: {e}")))
}

/// Where the socket lives by default: `$XDG_RUNTIME_DIR/greenlight/`, or
/// the data directory.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("greenlight/greenlight.sock"),
        _ => data_dir.join("greenlight.sock"),
    }
}
