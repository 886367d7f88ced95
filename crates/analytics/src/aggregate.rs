//! The aggregators' side (SPEC §19.4): open a share, run Prio3 preparation
//! as leader or helper, add valid output shares, and combine both
//! aggregate shares into counts.

use crate::hpke_seal::{self, AggregatorKeyPair, Role};
use crate::report::{aad, encode, report_id, unhex};
use crate::{Counts, Error, Report, Result, SealedShare, BUCKETS, REPORT_VERSION, VDAF_CONTEXT};
use greenlight_protocol::{DayNumber, RegionId};
use prio::codec::ParameterizedDecode;
use prio::field::{Field128, FieldElementWithInteger};
use prio::vdaf::prio3::{optimal_chunk_length, Prio3, Prio3Histogram};
use prio::vdaf::{Aggregatable, Aggregator, Collector, PrepareTransition};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

type PrepState = <Prio3Histogram as Aggregator<32, 16>>::PrepareState;
type PrepMessage = <Prio3Histogram as Aggregator<32, 16>>::PrepareMessage;
type PrioPrepShare = <Prio3Histogram as Aggregator<32, 16>>::PrepareShare;
/// One aggregator's share of one valid report, ready to add up.
pub type OutputShare = prio::vdaf::OutputShare<Field128>;

/// The Prio3 instance of SPEC §19.1: Prio3Histogram, two aggregators,
/// 12 buckets, the chunk length prio recommends for 12.
pub(crate) fn vdaf() -> Prio3Histogram {
    Prio3::new_histogram(2, BUCKETS, optimal_chunk_length(BUCKETS))
        .expect("invariant: 12 buckets and 2 aggregators are a valid Prio3Histogram")
}

/// The Prio3 verify key, 32 bytes shared by leader and helper and by no
/// one else. Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VerifyKey([u8; 32]);

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKey(<redacted>)")
    }
}

impl VerifyKey {
    /// A fresh verify key.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> VerifyKey {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        VerifyKey(key)
    }

    /// A stored verify key.
    pub fn from_bytes(bytes: [u8; 32]) -> VerifyKey {
        VerifyKey(bytes)
    }

    /// The key, for storing in a 0600 file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

/// The input share an aggregator can open, with what preparation needs.
struct Opened {
    nonce: [u8; 16],
    public_share: <Prio3Histogram as prio::vdaf::Vdaf>::PublicShare,
    input_share: <Prio3Histogram as prio::vdaf::Vdaf>::InputShare,
}

#[allow(clippy::too_many_arguments)]
fn open_share(
    vdaf: &Prio3Histogram,
    role: Role,
    keys: &AggregatorKeyPair,
    version: u8,
    id_hex: &str,
    time: u64,
    day: DayNumber,
    region: &RegionId,
    public_share_hex: &str,
    share: &SealedShare,
) -> Result<Opened> {
    if version != REPORT_VERSION {
        return Err(Error::UnknownVersion {
            got: version,
            supported: REPORT_VERSION,
        });
    }
    let nonce = report_id(id_hex)?;
    if share.key_id != keys.key_id() {
        return Err(Error::WrongKeyId {
            got: share.key_id,
            expected: keys.key_id(),
        });
    }
    let public_bytes = unhex("public_share", public_share_hex)?;
    let enc = unhex("enc", &share.enc)?;
    let ct = unhex("ciphertext", &share.ciphertext)?;
    let info = hpke_seal::info(version, role, region);
    let aad = aad(version, &nonce, time, day, &public_bytes);
    let plain = keys.open(&enc, &ct, &info, &aad)?;
    let public_share =
        ParameterizedDecode::get_decoded_with_param(vdaf, &public_bytes).map_err(|_| {
            Error::Malformed {
                field: "public_share",
                reason: "not a Prio3 public share".into(),
            }
        })?;
    let input_share =
        ParameterizedDecode::get_decoded_with_param(&(vdaf, usize::from(role.id())), &plain)
            .map_err(|_| Error::BadShare)?;
    Ok(Opened {
        nonce,
        public_share,
        input_share,
    })
}

fn prepare_init(
    vdaf: &Prio3Histogram,
    role: Role,
    verify_key: &VerifyKey,
    opened: &Opened,
) -> Result<(PrepState, PrioPrepShare)> {
    vdaf.prepare_init(
        &verify_key.0,
        VDAF_CONTEXT,
        usize::from(role.id()),
        &(),
        &opened.nonce,
        &opened.public_share,
        &opened.input_share,
    )
    .map_err(|_| Error::BadShare)
}

/// The leader's preparation share of one report, hex on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrepShare(pub String);

/// The leader's state for one report between its first step and the
/// helper's answer. Holds the leader's share only.
#[derive(Debug)]
pub struct LeaderPrep {
    state: PrepState,
}

impl LeaderPrep {
    /// Opens the leader's share of `report` and starts preparation: checks
    /// version, key id, region binding and decryption (SPEC §19.4 step 1).
    pub fn start(
        report: &Report,
        keys: &AggregatorKeyPair,
        verify_key: &VerifyKey,
    ) -> Result<(LeaderPrep, PrepShare)> {
        let vdaf = vdaf();
        let opened = open_share(
            &vdaf,
            Role::Leader,
            keys,
            report.version,
            &report.report_id,
            report.time,
            report.day,
            &report.region,
            &report.public_share,
            &report.leader_share,
        )?;
        let (state, share) = prepare_init(&vdaf, Role::Leader, verify_key, &opened)?;
        Ok((
            LeaderPrep { state },
            PrepShare(hex::encode(encode(&share)?)),
        ))
    }

    /// Finishes with the helper's preparation message: the leader's output
    /// share, or [`Error::InvalidProof`].
    pub fn finish(self, prep_message_hex: &str) -> Result<OutputShare> {
        let vdaf = vdaf();
        let bytes = unhex("prep_message", prep_message_hex)?;
        let message = PrepMessage::get_decoded_with_param(&self.state, &bytes).map_err(|_| {
            Error::Malformed {
                field: "prep_message",
                reason: "not a Prio3 preparation message".into(),
            }
        })?;
        match vdaf.prepare_next(VDAF_CONTEXT, self.state, message) {
            Ok(PrepareTransition::Finish(out)) => Ok(out),
            Ok(PrepareTransition::Continue(..)) => {
                Err(Error::Vdaf("Prio3 asked for a second round".into()))
            }
            Err(_) => Err(Error::InvalidProof),
        }
    }
}

/// What the leader sends the helper for one report (SPEC §19.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperInput {
    /// Report format version.
    pub version: u8,
    /// Report id, hex.
    pub report_id: String,
    /// Report time, Unix seconds.
    pub time: u64,
    /// Day of the measurement.
    pub day: DayNumber,
    /// Prio3 public share, hex.
    pub public_share: String,
    /// The helper's sealed input share, as the phone sent it.
    pub helper_share: SealedShare,
    /// The leader's preparation share, hex.
    pub leader_prep_share: PrepShare,
}

impl HelperInput {
    /// The helper's part of `report` with the leader's preparation share.
    pub fn of(report: &Report, leader_prep_share: &PrepShare) -> HelperInput {
        HelperInput {
            version: report.version,
            report_id: report.report_id.clone(),
            time: report.time,
            day: report.day,
            public_share: report.public_share.clone(),
            helper_share: report.helper_share.clone(),
            leader_prep_share: leader_prep_share.clone(),
        }
    }
}

/// The helper's result for one valid report.
#[derive(Debug)]
pub struct HelperOutput {
    /// The preparation message for the leader, hex.
    pub prep_message: String,
    /// The helper's output share, to add to its aggregate share.
    pub output: OutputShare,
}

/// The helper's whole step for one report: open its share, prepare,
/// combine with the leader's preparation share and verify the proof.
pub fn helper_prepare(
    input: &HelperInput,
    region: &RegionId,
    keys: &AggregatorKeyPair,
    verify_key: &VerifyKey,
) -> Result<HelperOutput> {
    let vdaf = vdaf();
    let opened = open_share(
        &vdaf,
        Role::Helper,
        keys,
        input.version,
        &input.report_id,
        input.time,
        input.day,
        region,
        &input.public_share,
        &input.helper_share,
    )?;
    let (state, helper_share) = prepare_init(&vdaf, Role::Helper, verify_key, &opened)?;
    let leader_bytes = unhex("leader_prep_share", &input.leader_prep_share.0)?;
    let leader_share =
        PrioPrepShare::get_decoded_with_param(&state, &leader_bytes).map_err(|_| {
            Error::Malformed {
                field: "leader_prep_share",
                reason: "not a Prio3 preparation share".into(),
            }
        })?;
    let message = vdaf
        .prepare_shares_to_prepare_message(VDAF_CONTEXT, &(), [leader_share, helper_share])
        .map_err(|_| Error::InvalidProof)?;
    let prep_message = hex::encode(encode(&message)?);
    match vdaf.prepare_next(VDAF_CONTEXT, state, message) {
        Ok(PrepareTransition::Finish(output)) => Ok(HelperOutput {
            prep_message,
            output,
        }),
        Ok(PrepareTransition::Continue(..)) => {
            Err(Error::Vdaf("Prio3 asked for a second round".into()))
        }
        Err(_) => Err(Error::InvalidProof),
    }
}

/// One aggregator's sum of output shares over a batch: meaningless alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateShare(pub(crate) prio::vdaf::AggregateShare<Field128>);

impl AggregateShare {
    /// The share as hex, to send to the leader.
    pub fn to_hex(&self) -> Result<String> {
        Ok(hex::encode(encode(&self.0)?))
    }

    /// A share received as hex.
    pub fn from_hex(text: &str) -> Result<AggregateShare> {
        let bytes = unhex("aggregate_share", text)?;
        let vdaf = vdaf();
        prio::vdaf::AggregateShare::get_decoded_with_param(&(&vdaf, &()), &bytes)
            .map(AggregateShare)
            .map_err(|_| Error::Malformed {
                field: "aggregate_share",
                reason: "not a Prio3 aggregate share of 12 buckets".into(),
            })
    }
}

/// Adds output shares into an aggregate share (empty input: all zero).
pub fn aggregate(outputs: impl IntoIterator<Item = OutputShare>) -> Result<AggregateShare> {
    let vdaf = vdaf();
    vdaf.aggregate(&(), outputs)
        .map(AggregateShare)
        .map_err(|e| Error::Vdaf(e.to_string()))
}

/// Adds `other` into `into` (aggregate shares of disjoint reports).
pub fn merge(into: &mut AggregateShare, other: &AggregateShare) -> Result<()> {
    into.0
        .merge(&other.0)
        .map_err(|e| Error::Vdaf(e.to_string()))
}

/// Combines the leader's and the helper's aggregate shares of the same
/// `reports` reports into counts. A bucket whose noisy sum is negative is
/// released as 0.
pub fn unshard(leader: &AggregateShare, helper: &AggregateShare, reports: usize) -> Result<Counts> {
    let vdaf = vdaf();
    let sums = vdaf
        .unshard(&(), [leader.0.clone(), helper.0.clone()], reports)
        .map_err(|e| Error::Vdaf(e.to_string()))?;
    let half = Field128::modulus() / 2;
    let mut buckets = [0u64; BUCKETS];
    for (out, sum) in buckets.iter_mut().zip(sums) {
        // Above half the modulus: a negative sum (noise), clamped to 0.
        *out = if sum > half {
            0
        } else {
            u64::try_from(sum).unwrap_or(u64::MAX)
        };
    }
    Ok(Counts { buckets })
}
