//! # greenlight-analytics
//!
//! Privacy-preserving aggregate counts (SPEC §19). Once a day a phone turns
//! its colour and two yes/no facts (notified today, uploaded today) into a
//! Prio3 histogram measurement with exactly one bucket set, splits it into
//! two secret shares, and seals each share with HPKE (RFC 9180) to one of
//! two non-colluding aggregators. The leader and the helper each decrypt
//! only their own share, check together that the measurement is valid
//! (Prio3's proof rejects a phone that sets two buckets or a bucket to 2),
//! and add valid shares up; only the sum of both aggregate shares over a
//! batch of at least a minimum number of reports reveals anything: counts.
//!
//! Sans-I/O: no sockets, files or clock. Time and randomness are parameters
//! (the Prio3 sharding itself draws from the operating system, which the
//! prio crate does not let a caller replace). Used by the daemon (client
//! side) and the server (leader and helper). Must never hold a decrypted
//! measurement outside the phone: aggregators only ever see their share.
//!
//! ```
//! use greenlight_analytics::*;
//! use greenlight_protocol::{Colour, DayNumber, RegionId, Timestamp};
//! let mut rng = rand::rngs::OsRng;
//! let (leader, helper) = (AggregatorKeyPair::generate(&mut rng), AggregatorKeyPair::generate(&mut rng));
//! let verify_key = VerifyKey::generate(&mut rng);
//! let region = RegionId::new("CH").unwrap();
//! let day = DayNumber(20_000);
//! let now = Timestamp(u64::from(day.0 + 1) * 86_400 + 60);
//! let m = Measurement { colour: Colour::Yellow, notified: true, uploaded: false };
//! let report = prepare_report(&m, now, day, &region, &leader.config(), &helper.config(), &mut rng).unwrap();
//! // The leader decrypts its share and starts the check; so does the helper.
//! let (state, leader_share) = LeaderPrep::start(&report, &leader, &verify_key).unwrap();
//! let helper_out = helper_prepare(&HelperInput::of(&report, &leader_share), &region, &helper, &verify_key).unwrap();
//! let output = state.finish(&helper_out.prep_message).unwrap();
//! let leader_agg = aggregate([output]).unwrap();
//! let helper_agg = aggregate([helper_out.output]).unwrap();
//! let counts = unshard(&leader_agg, &helper_agg, 1).unwrap();
//! assert_eq!(counts.buckets[m.bucket()], 1);
//! assert_eq!(counts.yellow(), 1);
//! ```

#![warn(missing_docs)]

mod aggregate;
mod error;
mod hpke_seal;
mod measurement;
pub mod noise;
mod report;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

pub use aggregate::{
    aggregate, helper_prepare, merge, unshard, AggregateShare, HelperInput, HelperOutput,
    LeaderPrep, OutputShare, PrepShare, VerifyKey,
};
pub use error::{Error, Result};
pub use hpke_seal::{AggregatorConfig, AggregatorKeyPair, Role};
pub use measurement::{Counts, Measurement, BUCKETS};
pub use noise::add_noise;
pub use report::{prepare_report, Report, SealedShare, REPORT_VERSION};

/// Prio3 context string (VDAF draft 13 §4): binds every proof to Greenlight
/// reports of this version, so shares cannot be replayed into another use.
pub const VDAF_CONTEXT: &[u8] = b"greenlight/v1/report";
