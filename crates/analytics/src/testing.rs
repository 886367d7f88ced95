//! Reports that honest phones never make, for testing aggregators: what a
//! dishonest phone holding both shares could send. Only with the
//! `testing` feature.

use crate::hpke_seal::{self, Role};
use crate::report::{aad, unhex};
use crate::{AggregatorConfig, AggregatorKeyPair, Measurement, Report, Result, REPORT_VERSION};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use prio::codec::{Decode, Encode};
use prio::field::Field128;
use rand_core::{CryptoRng, RngCore};

/// A report whose measurement sets two buckets: `m`'s and the next one.
/// It needs the leader's key pair to re-seal the altered leader share, as
/// the phone itself would before sealing. The proof rejects it.
#[allow(clippy::too_many_arguments)]
pub fn two_hot_report(
    m: &Measurement,
    now: Timestamp,
    day: DayNumber,
    region: &RegionId,
    leader: &AggregatorKeyPair,
    helper: &AggregatorConfig,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Report> {
    let mut report = crate::prepare_report(m, now, day, region, &leader.config(), helper, rng)?;
    let id = report.id()?;
    let public = unhex("public_share", &report.public_share)?;
    let info = hpke_seal::info(REPORT_VERSION, Role::Leader, region);
    let aad = aad(REPORT_VERSION, &id, report.time, report.day, &public);
    let mut plain = leader.open(
        &unhex("enc", &report.leader_share.enc)?,
        &unhex("ciphertext", &report.leader_share.ciphertext)?,
        &info,
        &aad,
    )?;
    // The leader's share opens with its 12 measurement elements, 16 bytes each.
    let bucket = (m.bucket() + 1) % crate::BUCKETS;
    let at = bucket * 16..bucket * 16 + 16;
    let x = Field128::get_decoded(&plain[at.clone()]).map_err(|_| crate::Error::BadShare)?;
    let y = (x + Field128::from(1u128))
        .get_encoded()
        .map_err(|_| crate::Error::BadShare)?;
    plain[at].copy_from_slice(&y);
    let (enc, ct) = hpke_seal::seal(&leader.config(), &info, &aad, &plain, rng)?;
    report.leader_share.enc = hex::encode(enc);
    report.leader_share.ciphertext = hex::encode(ct);
    Ok(report)
}
