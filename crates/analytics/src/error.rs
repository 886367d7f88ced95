//! The one error type of aggregate reporting.

use thiserror::Error;

/// Why a report, share or aggregate was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The report's version is not one this code speaks.
    #[error("unknown report version {got}; supported: {supported}")]
    UnknownVersion {
        /// The version in the report.
        got: u8,
        /// The version this code speaks.
        supported: u8,
    },
    /// A hex field is not hex, or has the wrong length.
    #[error("malformed field {field}: {reason}")]
    Malformed {
        /// The field, as named in the report.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The share is sealed to another key than this aggregator's.
    #[error("the share is sealed to key id {got}, this aggregator has {expected}")]
    WrongKeyId {
        /// The key id in the report.
        got: u8,
        /// This aggregator's key id.
        expected: u8,
    },
    /// HPKE could not open the share: another key, or the share, report
    /// id, time, day, region or role was altered.
    #[error("the share does not decrypt under this aggregator's key and the report's bindings")]
    Undecryptable,
    /// The decrypted share is not a Prio3 input share.
    #[error("the share is not a valid Prio3 input share")]
    BadShare,
    /// The Prio3 validity check failed: the measurement is not one-hot, or
    /// a share was tampered with.
    #[error("the report's validity proof was rejected")]
    InvalidProof,
    /// The report's region is not the aggregator's.
    #[error("the report is for region {got}, not {expected}")]
    WrongRegion {
        /// Region in the report.
        got: String,
        /// The aggregator's region.
        expected: String,
    },
    /// A Prio3 operation failed for a reason other than the proof.
    #[error("Prio3: {0}")]
    Vdaf(String),
    /// HPKE failed to seal (never expected with a valid public key).
    #[error("HPKE: {0}")]
    Hpke(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
