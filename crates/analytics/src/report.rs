//! The report a phone sends (SPEC §19.2) and how a phone makes one.

use crate::hpke_seal::{self, AggregatorConfig, Role};
use crate::{Error, Measurement, Result, BUCKETS, VDAF_CONTEXT};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use prio::codec::Encode;
use prio::vdaf::Client;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// The report format version this code writes and reads.
pub const REPORT_VERSION: u8 = 1;

/// One input share sealed with HPKE to one aggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    /// The aggregator key it is sealed to.
    pub key_id: u8,
    /// HPKE encapsulated key (32 bytes), hex.
    pub enc: String,
    /// HPKE ciphertext of the encoded Prio3 input share, hex.
    pub ciphertext: String,
}

/// A phone's daily report: JSON with hex byte fields (SPEC §19.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u8,
    /// 16 random bytes, hex: the Prio3 nonce and the replay key.
    pub report_id: String,
    /// When the phone made the report, Unix seconds.
    pub time: u64,
    /// The day the measurement describes.
    pub day: DayNumber,
    /// The phone's home region.
    pub region: RegionId,
    /// The Prio3 public share, hex.
    pub public_share: String,
    /// The leader's input share.
    pub leader_share: SealedShare,
    /// The helper's input share.
    pub helper_share: SealedShare,
}

pub(crate) fn unhex(field: &'static str, text: &str) -> Result<Vec<u8>> {
    hex::decode(text).map_err(|e| Error::Malformed {
        field,
        reason: e.to_string(),
    })
}

/// The report id as 16 bytes.
pub(crate) fn report_id(text: &str) -> Result<[u8; 16]> {
    unhex("report_id", text)?
        .try_into()
        .map_err(|_| Error::Malformed {
            field: "report_id",
            reason: "must be 16 bytes".into(),
        })
}

/// The HPKE `aad` of both shares (SPEC §19.3):
/// `version ‖ report_id ‖ time (u64 BE) ‖ day (u32 BE) ‖ public_share`.
pub(crate) fn aad(
    version: u8,
    id: &[u8; 16],
    time: u64,
    day: DayNumber,
    public_share: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(29 + public_share.len());
    out.push(version);
    out.extend_from_slice(id);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&day.0.to_be_bytes());
    out.extend_from_slice(public_share);
    out
}

impl Report {
    /// The 16-byte report id.
    pub fn id(&self) -> Result<[u8; 16]> {
        report_id(&self.report_id)
    }

    /// The report's time.
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(self.time)
    }
}

/// Makes a phone's report for `day` at time `now`: shards the measurement
/// with Prio3 and seals one share to each aggregator (SPEC §19.2–§19.3).
pub fn prepare_report(
    measurement: &Measurement,
    now: Timestamp,
    day: DayNumber,
    region: &RegionId,
    leader: &AggregatorConfig,
    helper: &AggregatorConfig,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Report> {
    let vdaf = crate::aggregate::vdaf();
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let (public_share, input_shares) = vdaf
        .shard(VDAF_CONTEXT, &measurement.bucket(), &id)
        .map_err(|e| Error::Vdaf(e.to_string()))?;
    debug_assert!(measurement.bucket() < BUCKETS);
    let public_share = encode(&public_share)?;
    let aad = aad(REPORT_VERSION, &id, now.0, day, &public_share);
    let mut sealed = Vec::with_capacity(2);
    for ((role, config), share) in [(Role::Leader, leader), (Role::Helper, helper)]
        .into_iter()
        .zip(&input_shares)
    {
        let info = hpke_seal::info(REPORT_VERSION, role, region);
        let (enc, ct) = hpke_seal::seal(config, &info, &aad, &encode(share)?, rng)?;
        sealed.push(SealedShare {
            key_id: config.key_id,
            enc: hex::encode(enc),
            ciphertext: hex::encode(ct),
        });
    }
    let [leader_share, helper_share]: [SealedShare; 2] = sealed
        .try_into()
        .map_err(|_| Error::Vdaf("Prio3 made other than two input shares".into()))?;
    Ok(Report {
        version: REPORT_VERSION,
        report_id: hex::encode(id),
        time: now.0,
        day,
        region: region.clone(),
        public_share: hex::encode(public_share),
        leader_share,
        helper_share,
    })
}

pub(crate) fn encode(message: &impl Encode) -> Result<Vec<u8>> {
    message
        .get_encoded()
        .map_err(|e| Error::Vdaf(e.to_string()))
}
