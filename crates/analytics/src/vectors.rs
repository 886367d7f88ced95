//! The frozen vectors of SPEC §19.8 (`protocol-spec/vectors/report.json`):
//! written once from a fixed seed if the file is missing, then checked.
//! Prio3's sharding randomness comes from the operating system (the prio
//! crate takes none from its caller), so the vector freezes the public
//! share and the input shares as drawn; everything else — keys, report
//! id, HPKE ephemeral keys (RFC 9180 `DeriveKeyPair(ikmE)`), `info`,
//! `aad`, ciphertexts — follows from the seed and those shares.

use crate::hpke_seal::{self, Role};
use crate::report::{aad, unhex};
use crate::*;
use greenlight_protocol::{Colour, DayNumber, RegionId, Timestamp};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};

/// "greenlig" + "report", as the protocol vectors' seed (SPEC §14.1).
const SEED: u64 = 0x677265656e6c6967 ^ 0x7265706f7274;

/// An RNG that hands out fixed bytes: HPKE's ephemeral `ikmE`.
struct Fixed(Vec<u8>);

impl RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(dest.len() <= self.0.len(), "the vector holds enough ikmE");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Fixed {}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors/report.json")
}

struct Setup {
    leader: AggregatorKeyPair,
    helper: AggregatorKeyPair,
    verify_key: VerifyKey,
    region: RegionId,
    day: DayNumber,
    now: Timestamp,
    measurement: Measurement,
    rng: ChaCha20Rng,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    Setup {
        leader: AggregatorKeyPair::generate(&mut rng),
        helper: AggregatorKeyPair::generate(&mut rng),
        verify_key: VerifyKey::generate(&mut rng),
        region: RegionId::new("CH").expect("region"),
        day: DayNumber(20_415),
        now: Timestamp(20_416 * 86_400 + 4_321),
        measurement: Measurement {
            colour: Colour::Yellow,
            notified: true,
            uploaded: false,
        },
        rng,
    }
}

fn plaintext(keys: &AggregatorKeyPair, role: Role, r: &Report) -> Vec<u8> {
    let id = r.id().expect("id");
    let public = unhex("public_share", &r.public_share).expect("hex");
    let share = match role {
        Role::Leader => &r.leader_share,
        Role::Helper => &r.helper_share,
    };
    keys.open(
        &unhex("enc", &share.enc).expect("hex"),
        &unhex("ciphertext", &share.ciphertext).expect("hex"),
        &hpke_seal::info(r.version, role, &r.region),
        &aad(r.version, &id, r.time, r.day, &public),
    )
    .expect("opens")
}

fn generate() -> Value {
    let mut s = setup();
    // The report's randomness, in the order prepare_report draws it:
    // report id, then ikmE for the leader's share, then the helper's.
    let mut peek = s.rng.clone();
    let mut drawn = [0u8; 80];
    peek.fill_bytes(&mut drawn);
    let report = prepare_report(
        &s.measurement,
        s.now,
        s.day,
        &s.region,
        &s.leader.config(),
        &s.helper.config(),
        &mut s.rng,
    )
    .expect("report");
    let two_hot = crate::tests::two_hot(&s.leader, &s.helper.config(), s.now, s.day, &s.region);
    let id = report.id().expect("id");
    let public = unhex("public_share", &report.public_share).expect("hex");
    json!({
        "description": "SPEC §19.8: one valid report and one two-hot report; Prio3 shares as drawn, the rest from the seed",
        "seed": format!("{SEED:#x}"),
        "vdaf": { "type": "Prio3Histogram", "draft": "draft-irtf-cfrg-vdaf-13", "algorithm_id": 4,
                  "length": BUCKETS, "chunk_length": 4, "aggregators": 2, "context": hex::encode(VDAF_CONTEXT) },
        "hpke": { "mode": "base", "kem": "DHKEM(X25519, HKDF-SHA256) 0x0020", "kdf": "HKDF-SHA256 0x0001", "aead": "ChaCha20Poly1305 0x0003" },
        "leader": { "secret_key": hex::encode(s.leader.secret_bytes()), "public_key": s.leader.config().public_key, "key_id": s.leader.key_id() },
        "helper": { "secret_key": hex::encode(s.helper.secret_bytes()), "public_key": s.helper.config().public_key, "key_id": s.helper.key_id() },
        "verify_key": hex::encode(s.verify_key.to_bytes()),
        "measurement": s.measurement,
        "bucket": s.measurement.bucket(),
        "ikm_e_leader": hex::encode(&drawn[16..48]),
        "ikm_e_helper": hex::encode(&drawn[48..80]),
        "info_leader": hex::encode(hpke_seal::info(REPORT_VERSION, Role::Leader, &s.region)),
        "info_helper": hex::encode(hpke_seal::info(REPORT_VERSION, Role::Helper, &s.region)),
        "aad": hex::encode(aad(REPORT_VERSION, &id, report.time, report.day, &public)),
        "leader_input_share": hex::encode(plaintext(&s.leader, Role::Leader, &report)),
        "helper_input_share": hex::encode(plaintext(&s.helper, Role::Helper, &report)),
        "report": report,
        "invalid": [{ "report": two_hot, "error": "invalid_proof",
                      "what": "the leader's measurement share has one added to the next bucket: two buckets set" }],
    })
}

fn aggregate_one(s: &Setup, report: &Report) -> Result<Counts> {
    let (state, share) = LeaderPrep::start(report, &s.leader, &s.verify_key)?;
    let out = helper_prepare(
        &HelperInput::of(report, &share),
        &s.region,
        &s.helper,
        &s.verify_key,
    )?;
    let l = aggregate([state.finish(&out.prep_message)?])?;
    let h = aggregate([out.output])?;
    unshard(&l, &h, 1)
}

#[test]
fn report_vectors_hold() {
    let path = path();
    if !path.exists() {
        let text = serde_json::to_string_pretty(&generate()).expect("JSON") + "\n";
        std::fs::write(&path, text).expect("writes the vectors");
    }
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors")).expect("JSON");
    let s = setup();
    let fresh = generate();
    // Everything the seed decides is reproduced exactly.
    for field in [
        "seed",
        "vdaf",
        "hpke",
        "leader",
        "helper",
        "verify_key",
        "measurement",
        "bucket",
        "ikm_e_leader",
        "ikm_e_helper",
        "info_leader",
        "info_helper",
    ] {
        assert_eq!(v[field], fresh[field], "{field}");
    }
    assert_eq!(v["report"]["report_id"], fresh["report"]["report_id"]);
    let report: Report = serde_json::from_value(v["report"].clone()).expect("report");
    // aad and the HPKE ciphertexts follow from the frozen shares.
    let id = report.id().expect("id");
    let public = unhex("public_share", &report.public_share).expect("hex");
    assert_eq!(
        v["aad"],
        hex::encode(aad(REPORT_VERSION, &id, report.time, report.day, &public))
    );
    for (role, keys, share, ikm, plain) in [
        (
            Role::Leader,
            &s.leader,
            &report.leader_share,
            "ikm_e_leader",
            "leader_input_share",
        ),
        (
            Role::Helper,
            &s.helper,
            &report.helper_share,
            "ikm_e_helper",
            "helper_input_share",
        ),
    ] {
        let ikm = unhex("ikm", v[ikm].as_str().expect("hex")).expect("hex");
        let plain = unhex("plain", v[plain].as_str().expect("hex")).expect("hex");
        let info = hpke_seal::info(REPORT_VERSION, role, &s.region);
        let aad = aad(REPORT_VERSION, &id, report.time, report.day, &public);
        let (enc, ct) =
            hpke_seal::seal(&keys.config(), &info, &aad, &plain, &mut Fixed(ikm)).expect("seal");
        assert_eq!(
            (hex::encode(enc), hex::encode(ct)),
            (share.enc.clone(), share.ciphertext.clone())
        );
    }
    let counts = aggregate_one(&s, &report).expect("the report is valid");
    let bucket = v["bucket"].as_u64().expect("bucket") as usize;
    assert_eq!(counts.buckets.iter().sum::<u64>(), 1);
    assert_eq!(counts.buckets[bucket], 1);
    for case in v["invalid"].as_array().expect("cases") {
        let bad: Report = serde_json::from_value(case["report"].clone()).expect("report");
        assert_eq!(aggregate_one(&s, &bad).err(), Some(Error::InvalidProof));
    }
}
