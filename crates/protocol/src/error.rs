//! The one error type of the protocol crate.

use thiserror::Error;

/// Everything that can go wrong when decoding, verifying or validating
/// Greenlight data. Every parser returns one of these and never panics.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a field of `what`.
    #[error("{what} is truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// The format being read.
        what: &'static str,
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes were left over after a complete `what`.
    #[error("{what} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The format being read.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// The input does not start with the magic of `what`.
    #[error("not a Greenlight {what}: wrong magic bytes")]
    BadMagic {
        /// The format expected.
        what: &'static str,
    },
    /// The format version is not one this implementation reads.
    #[error(
        "{what} version {got} is not supported (this implementation reads version {supported})"
    )]
    UnknownVersion {
        /// The format being read.
        what: &'static str,
        /// The version found.
        got: u8,
        /// The version supported.
        supported: u8,
    },
    /// A field holds a value outside its allowed set.
    #[error("{what}: invalid {field}: {reason}")]
    InvalidField {
        /// The format being read or validated.
        what: &'static str,
        /// The field, as named in the spec.
        field: &'static str,
        /// Why the value is refused, with the allowed range.
        reason: String,
    },
    /// A count exceeds the limit the spec sets for it.
    #[error("{what}: {count} {field} exceed the limit of {max}")]
    TooLarge {
        /// The format being read.
        what: &'static str,
        /// The counted field.
        field: &'static str,
        /// The count found.
        count: u64,
        /// The largest count allowed.
        max: u64,
    },
    /// The data was signed for another region than the one expected.
    #[error("{what} is for region {got}, expected {expected}")]
    WrongRegion {
        /// The format being verified.
        what: &'static str,
        /// The region the caller trusts.
        expected: String,
        /// The region found in the data.
        got: String,
    },
    /// The ed25519 signature does not verify under the trusted key.
    #[error("{what} signature does not verify under the trusted key")]
    BadSignature {
        /// The format being verified.
        what: &'static str,
    },
    /// A policy's serial is not newer than the one already held (rollback).
    #[error("{what} serial {got} is not newer than the held serial {held}")]
    StaleSerial {
        /// The format being verified.
        what: &'static str,
        /// The serial offered.
        got: u32,
        /// The serial already held.
        held: u32,
    },
    /// An advertisement carries no Greenlight service data.
    #[error("advertisement carries no Greenlight service data")]
    NotGreenlight,
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
