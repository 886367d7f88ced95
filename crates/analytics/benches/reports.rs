//! Throughput of aggregate reports (SPEC §19), one core:
//! - reports prepared per second (a phone's daily work: Prio3 sharding,
//!   two HPKE seals, JSON);
//! - aggregation: reports per second through the leader's and the helper's
//!   whole work (JSON, HPKE open, Prio3 preparation on both sides, proof
//!   check, aggregation) on a measured sample, and what that means for
//!   1,000,000 reports (extrapolated linearly: the work per report is
//!   independent of the batch size).
//!
//! `cargo bench -p greenlight-analytics --bench reports [-- SAMPLE]`

use greenlight_analytics::*;
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::time::Instant;

fn main() {
    let sample: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let leader = AggregatorKeyPair::generate(&mut rng);
    let helper = AggregatorKeyPair::generate(&mut rng);
    let verify_key = VerifyKey::generate(&mut rng);
    let region = RegionId::new("CH").expect("region");
    let day = DayNumber(20_400);
    let now = Timestamp(20_401 * 86_400);
    let (lc, hc) = (leader.config(), helper.config());

    let started = Instant::now();
    let reports: Vec<String> = (0..sample)
        .map(|i| {
            let m = Measurement::from_bucket(i % BUCKETS).expect("bucket");
            let r = prepare_report(&m, now, day, &region, &lc, &hc, &mut rng).expect("report");
            serde_json::to_string(&r).expect("JSON")
        })
        .collect();
    let prepare = started.elapsed().as_secs_f64();
    let size = reports.iter().map(String::len).sum::<usize>() / sample;
    println!(
        "prepare: {sample} reports in {prepare:.2} s = {:.0} reports/s on one core ({:.2} ms each; {size} bytes of JSON each)",
        sample as f64 / prepare,
        prepare * 1e3 / sample as f64
    );

    let started = Instant::now();
    let (mut leader_outs, mut helper_outs) = (Vec::new(), Vec::new());
    let mut helper_time = std::time::Duration::ZERO;
    let mut helper_bytes = 0;
    for text in &reports {
        let r: Report = serde_json::from_str(text).expect("report");
        let (state, share) = LeaderPrep::start(&r, &leader, &verify_key).expect("leader");
        let input = HelperInput::of(&r, &share);
        helper_bytes += serde_json::to_string(&input).expect("JSON").len();
        let at_helper = Instant::now();
        let out = helper_prepare(&input, &region, &helper, &verify_key).expect("helper");
        helper_time += at_helper.elapsed();
        leader_outs.push(state.finish(&out.prep_message).expect("finish"));
        helper_outs.push(out.output);
    }
    let l = aggregate(leader_outs).expect("aggregate");
    let h = aggregate(helper_outs).expect("aggregate");
    let counts = unshard(&l, &h, sample).expect("unshard");
    let aggregation = started.elapsed().as_secs_f64();
    assert_eq!(counts.buckets.iter().sum::<u64>(), sample as u64);
    let per_second = sample as f64 / aggregation;
    println!(
        "aggregate: {sample} reports through leader + helper in {aggregation:.2} s = {per_second:.0} reports/s on one core"
    );
    let helper_share = helper_time.as_secs_f64() / aggregation;
    println!(
        "aggregate: 1,000,000 reports ≈ {:.0} s on one core (extrapolated linearly from the {sample}-report sample); \
         {:.0} % of the work at the helper, the rest at the leader; {} bytes a report sent to the helper",
        1e6 / per_second,
        helper_share * 100.0,
        helper_bytes / sample
    );
}
