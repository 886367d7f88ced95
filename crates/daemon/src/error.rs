//! The daemon's errors. Each says what went wrong and with what, so the
//! CLI can show it as is; none carries a key, an EphID or a code.

use crate::store::StoreError;

/// Result with the daemon's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong on the phone side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local store failed (full disk, permissions, a bad key file).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something a server sent failed verification or decoding.
    #[error("{0}")]
    Protocol(#[from] greenlight_protocol::Error),
    /// A server could not be reached, or answered with an error.
    #[error("server {server}: {reason}")]
    Server {
        /// The server's base URL.
        server: String,
        /// What happened.
        reason: String,
    },
    /// A server's batch failed verification: it is not used, and asked for
    /// again at the next sync.
    #[error("server {server}: batch {number} refused: {reason}")]
    BadBatch {
        /// The server's base URL.
        server: String,
        /// The batch number.
        number: u64,
        /// Why it was refused.
        reason: String,
    },
    /// The user's request cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The local API failed.
    #[error("local API {path}: {reason}")]
    Api {
        /// The socket path.
        path: String,
        /// What happened.
        reason: String,
    },
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an unexpected failure.
    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    /// A server-side failure.
    pub fn server(server: &str, reason: impl std::fmt::Display) -> Error {
        Error::Server {
            server: server.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// A short machine-readable name for the kind of error (the local API
    /// sends it with the message).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Protocol(_) => "protocol",
            Error::Server { .. } => "server",
            Error::BadBatch { .. } => "bad_batch",
            Error::Refused(_) => "refused",
            Error::Config(_) => "config",
            Error::Api { .. } => "api",
            Error::Internal(_) => "internal",
        }
    }
}
