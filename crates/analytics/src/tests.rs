//! Round trips and the attacks SPEC §19.7 names: a tampered share, a
//! measurement with two buckets set, the wrong key, swapped shares.

use crate::hpke_seal::{self, Role};
use crate::report::{aad, unhex};
use crate::*;
use greenlight_protocol::{Colour, DayNumber, RegionId, Timestamp};
use prio::codec::{Decode, Encode};
use prio::field::Field128;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Fixture {
    rng: ChaCha20Rng,
    leader: AggregatorKeyPair,
    helper: AggregatorKeyPair,
    verify_key: VerifyKey,
    region: RegionId,
    day: DayNumber,
    now: Timestamp,
}

fn fixture() -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    Fixture {
        leader: AggregatorKeyPair::generate(&mut rng),
        helper: AggregatorKeyPair::generate(&mut rng),
        verify_key: VerifyKey::generate(&mut rng),
        region: RegionId::new("CH").expect("valid region"),
        day: DayNumber(20_400),
        now: Timestamp(20_401 * 86_400 + 3_600),
        rng,
    }
}

impl Fixture {
    fn report(&mut self, m: &Measurement) -> Report {
        prepare_report(
            m,
            self.now,
            self.day,
            &self.region,
            &self.leader.config(),
            &self.helper.config(),
            &mut self.rng,
        )
        .expect("report")
    }

    /// Both aggregators' output shares of one report, or the first refusal.
    fn check(&self, report: &Report) -> Result<(OutputShare, OutputShare)> {
        let (state, share) = LeaderPrep::start(report, &self.leader, &self.verify_key)?;
        let out = helper_prepare(
            &HelperInput::of(report, &share),
            &self.region,
            &self.helper,
            &self.verify_key,
        )?;
        Ok((state.finish(&out.prep_message)?, out.output))
    }
}

fn measurement(i: usize) -> Measurement {
    Measurement::from_bucket((i * 7 + i / 5) % BUCKETS).expect("in range")
}

#[test]
fn one_hundred_fifty_reports_give_exact_counts() {
    let mut f = fixture();
    let mut expected = [0u64; BUCKETS];
    let (mut leader_outs, mut helper_outs) = (Vec::new(), Vec::new());
    for i in 0..150 {
        let m = measurement(i);
        expected[m.bucket()] += 1;
        let report = f.report(&m);
        let (l, h) = f.check(&report).expect("valid report");
        leader_outs.push(l);
        helper_outs.push(h);
    }
    let leader = aggregate(leader_outs).expect("leader aggregate");
    let helper = AggregateShare::from_hex(
        &aggregate(helper_outs)
            .expect("helper")
            .to_hex()
            .expect("hex"),
    )
    .expect("aggregate share round trip");
    let counts = unshard(&leader, &helper, 150).expect("unshard");
    assert_eq!(counts.buckets, expected);
    assert_eq!(counts.green() + counts.yellow() + counts.red(), 150);
    let m = Measurement {
        colour: Colour::Red,
        notified: true,
        uploaded: true,
    };
    assert_eq!(m.bucket(), 11);
}

#[test]
fn a_report_survives_json() {
    let mut f = fixture();
    let report = f.report(&measurement(3));
    let text = serde_json::to_string(&report).expect("JSON");
    let back: Report = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, report);
    assert!(f.check(&back).is_ok());
}

/// Re-seals the leader's share of `report` after `edit` changed its
/// plaintext, as a dishonest phone holding both shares could.
fn reseal_leader(f: &Fixture, report: &mut Report, edit: impl FnOnce(&mut Vec<u8>)) {
    let id = report.id().expect("id");
    let public = unhex("public_share", &report.public_share).expect("hex");
    let info = hpke_seal::info(REPORT_VERSION, Role::Leader, &f.region);
    let aad = aad(REPORT_VERSION, &id, report.time, report.day, &public);
    let mut plain = f
        .leader
        .open(
            &unhex("enc", &report.leader_share.enc).expect("hex"),
            &unhex("ct", &report.leader_share.ciphertext).expect("hex"),
            &info,
            &aad,
        )
        .expect("opens");
    edit(&mut plain);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (enc, ct) =
        hpke_seal::seal(&f.leader.config(), &info, &aad, &plain, &mut rng).expect("seal");
    report.leader_share.enc = hex::encode(enc);
    report.leader_share.ciphertext = hex::encode(ct);
}

#[test]
fn a_measurement_with_two_buckets_set_fails_the_proof() {
    let mut f = fixture();
    let mut report = f.report(&measurement(0));
    let bucket = (measurement(0).bucket() + 1) % BUCKETS;
    // The leader's share starts with its 12 measurement elements (16 bytes
    // each): adding one to another bucket makes the measurement two-hot.
    reseal_leader(&f, &mut report, |plain| {
        let at = bucket * 16..bucket * 16 + 16;
        let x = Field128::get_decoded(&plain[at.clone()]).expect("field element");
        let y = x + Field128::from(1u128);
        plain[at].copy_from_slice(&y.get_encoded().expect("encodes"));
    });
    assert_eq!(f.check(&report).err(), Some(Error::InvalidProof));
}

#[test]
fn a_tampered_proof_share_fails_the_proof() {
    let mut f = fixture();
    let mut report = f.report(&measurement(5));
    reseal_leader(&f, &mut report, |plain| {
        let last = plain.len() - 40;
        plain[last] ^= 1;
    });
    assert_eq!(f.check(&report).err(), Some(Error::InvalidProof));
}

#[test]
fn a_tampered_ciphertext_does_not_decrypt() {
    let mut f = fixture();
    let mut report = f.report(&measurement(1));
    let mut ct = unhex("ct", &report.helper_share.ciphertext).expect("hex");
    ct[0] ^= 0x80;
    report.helper_share.ciphertext = hex::encode(ct);
    assert_eq!(f.check(&report).err(), Some(Error::Undecryptable));
}

#[test]
fn a_share_sealed_to_another_key_is_refused() {
    let mut f = fixture();
    let stranger = AggregatorKeyPair::generate(&mut f.rng);
    // Same key id as the helper, other key: HPKE refuses.
    let impostor = AggregatorConfig {
        key_id: f.helper.key_id(),
        public_key: stranger.config().public_key,
    };
    let report = prepare_report(
        &measurement(2),
        f.now,
        f.day,
        &f.region,
        &f.leader.config(),
        &impostor,
        &mut f.rng,
    )
    .expect("report");
    assert_eq!(f.check(&report).err(), Some(Error::Undecryptable));
    // Another key id: refused before decryption.
    let report = prepare_report(
        &measurement(2),
        f.now,
        f.day,
        &f.region,
        &stranger.config(),
        &f.helper.config(),
        &mut f.rng,
    )
    .expect("report");
    assert_ne!(
        stranger.key_id(),
        f.leader.key_id(),
        "seeded keys differ in id"
    );
    assert!(matches!(f.check(&report), Err(Error::WrongKeyId { .. })));
}

#[test]
fn shares_cannot_move_between_reports_roles_or_regions() {
    let mut f = fixture();
    let a = f.report(&measurement(1));
    let b = f.report(&measurement(2));
    let mut swapped = a.clone();
    swapped.helper_share = b.helper_share.clone();
    assert_eq!(f.check(&swapped).err(), Some(Error::Undecryptable));
    let mut later = a.clone();
    later.time += 1;
    assert_eq!(f.check(&later).err(), Some(Error::Undecryptable));
    let mut elsewhere = a.clone();
    elsewhere.region = RegionId::new("DE").expect("valid");
    assert_eq!(f.check(&elsewhere).err(), Some(Error::Undecryptable));
    // The helper's share opened as the leader's (same key on both roles).
    let same = AggregatorKeyPair::from_secret(f.helper.secret_bytes());
    let mut as_leader = a.clone();
    as_leader.leader_share = a.helper_share.clone();
    assert_eq!(
        LeaderPrep::start(&as_leader, &same, &f.verify_key).err(),
        Some(Error::Undecryptable)
    );
}

#[test]
fn another_verify_key_fails_the_proof() {
    let mut f = fixture();
    let report = f.report(&measurement(4));
    let (_, share) = LeaderPrep::start(&report, &f.leader, &f.verify_key).expect("opens");
    let other = VerifyKey::generate(&mut f.rng);
    let out = helper_prepare(
        &HelperInput::of(&report, &share),
        &f.region,
        &f.helper,
        &other,
    );
    assert_eq!(out.err(), Some(Error::InvalidProof));
}

#[test]
fn noise_is_centred_and_spread_by_epsilon() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let n = 20_000;
    let samples: Vec<i64> = (0..n)
        .map(|_| noise::two_sided_geometric(0.5, &mut rng))
        .collect();
    let mean = samples.iter().sum::<i64>() as f64 / n as f64;
    let var = samples
        .iter()
        .map(|s| (*s as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    // Variance of the two-sided geometric: 2α/(1−α)², α = e^−ε ≈ 7.7 at ε = 0.5.
    let alpha = (-0.5f64).exp();
    let expected = 2.0 * alpha / (1.0 - alpha).powi(2);
    assert!(mean.abs() < 0.2, "mean {mean}");
    assert!(
        (var - expected).abs() / expected < 0.1,
        "variance {var} vs {expected}"
    );
}

#[test]
fn noisy_counts_stay_near_the_truth() {
    let mut f = fixture();
    let report = f.report(&measurement(0));
    let (l, h) = f.check(&report).expect("valid");
    let mut leader = aggregate([l]).expect("aggregate");
    let mut helper = aggregate([h]).expect("aggregate");
    add_noise(&mut leader, 1.0, &mut f.rng).expect("noise");
    add_noise(&mut helper, 1.0, &mut f.rng).expect("noise");
    let counts = unshard(&leader, &helper, 1).expect("unshard");
    assert!(counts.buckets.iter().all(|c| *c < 40), "{counts:?}");
}

/// A two-hot report for the vectors: bucket 0 and bucket 1 both set.
pub(crate) fn two_hot(
    leader: &AggregatorKeyPair,
    helper: &AggregatorConfig,
    now: Timestamp,
    day: DayNumber,
    region: &RegionId,
) -> Report {
    let f = Fixture {
        rng: ChaCha20Rng::seed_from_u64(77),
        leader: leader.clone(),
        helper: AggregatorKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(0)),
        verify_key: VerifyKey::generate(&mut ChaCha20Rng::seed_from_u64(0)),
        region: region.clone(),
        day,
        now,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(78);
    let m = Measurement::from_bucket(0).expect("bucket");
    let mut report =
        prepare_report(&m, now, day, region, &leader.config(), helper, &mut rng).expect("report");
    reseal_leader(&f, &mut report, |plain| {
        let x = Field128::get_decoded(&plain[16..32]).expect("field element");
        let y = x + Field128::from(1u128);
        plain[16..32].copy_from_slice(&y.get_encoded().expect("encodes"));
    });
    report
}
