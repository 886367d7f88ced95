//! Prints the protocol's headline figures on this machine, one core:
//! `cargo bench -p greenlight-protocol --bench figures`.
//!
//! Each figure is the median of several runs, with the physical floor
//! (raw ChaCha20 keystream over the same bytes) measured in the same run.

mod workload;

use greenlight_protocol::*;
use std::time::{Duration, Instant};

fn median_time(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut out = 0;
    for _ in 0..runs {
        let t = Instant::now();
        out = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[runs / 2], out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    const KEYS: usize = 100_000;
    const WINDOWS: usize = 20_000;
    const MATCHING: usize = 20;
    let ids = (KEYS * 96) as f64;

    println!("Greenlight protocol figures (one core)\n");
    let key = DailyKey::from_bytes([7; 32]);
    let (t, _) = median_time(5, || {
        (0..10_000u32)
            .map(|d| key.ephid_generator(DayNumber(d)).all_ephids().len())
            .sum()
    });
    println!(
        "EphID derivation (HKDF + 96 EphIDs per key): {:.1} M EphIDs/s, {:.2} µs per key-day",
        960_000.0 / t.as_secs_f64() / 1e6,
        t.as_secs_f64() * 1e6 / 10_000.0
    );

    let batch = workload::batch(KEYS, 1);
    let windows = workload::windows(&batch, WINDOWS, MATCHING, 2);
    let options = MatchOptions::from(&ExposurePolicy::recommended(batch.region.clone()));
    let today = workload::DAY0.offset(14);
    let (raw, _) = median_time(5, || usize::from(workload::raw_keystream(KEYS)));
    let (phone, found) = median_time(5, || {
        MatchIndex::prepare(&batch)
            .match_windows(&windows, &options, today)
            .len()
    });
    assert!(found >= MATCHING, "planted matches must be found");
    let (prep, _) = median_time(5, || MatchIndex::prepare(&batch).len());
    println!("\nMatching {KEYS} daily keys ({:.1} M EphIDs) against {WINDOWS} windows (14 days of a busy phone):", ids / 1e6);
    println!(
        "  raw ChaCha20 keystream, same bytes  : {:>7.3} s  ({:.1} M EphIDs/s)",
        raw.as_secs_f64(),
        ids / raw.as_secs_f64() / 1e6
    );
    println!(
        "  phone: prepare (HKDF, group by day) : {:>7.3} s",
        prep.as_secs_f64()
    );
    println!(
        "  phone: prepare + match (streaming)  : {:>7.3} s  ({:.1} M EphIDs/s), {found} matches",
        phone.as_secs_f64(),
        ids / phone.as_secs_f64() / 1e6
    );
    println!(
        "  matching / raw keystream throughput : {:.2}  (target >= 0.5)",
        raw.as_secs_f64() / phone.as_secs_f64()
    );

    let (tables, _) = median_time(3, || MatchIndex::prepare(&batch).with_ephid_tables().len());
    let shared = MatchIndex::prepare(&batch).with_ephid_tables();
    let (query, found_shared) =
        median_time(5, || shared.match_windows(&windows, &options, today).len());
    assert_eq!(found, found_shared, "both strategies agree");
    println!(
        "  shared: prepare + EphID tables      : {:>7.3} s  (once per batch, for many phones)",
        tables.as_secs_f64()
    );
    println!(
        "  shared: match {WINDOWS} windows        : {:>7.4} s  ({:.0} ns per window)",
        query.as_secs_f64(),
        query.as_secs_f64() * 1e9 / WINDOWS as f64
    );

    for &items in &[100_000usize, 1_000_000] {
        let mut filter = EpochFilter::with_capacity(items).expect("valid size");
        for i in 0..items as u32 {
            filter.insert(&EpochHash::new(&EphId([1; 16]), EpochNumber(i)));
        }
        let probes = 1_000_000u32;
        let (t, hits) = median_time(3, || {
            (0..probes)
                .filter(|&i| filter.contains(&EpochHash::new(&EphId([2; 16]), EpochNumber(i))))
                .count()
        });
        let (t_hash, _) = median_time(3, || {
            (0..probes)
                .map(|i| EpochHash::new(&EphId([2; 16]), EpochNumber(i)).0[0] as usize)
                .sum()
        });
        let bits_per = filter.len_bits() as f64 / items as f64;
        let p = filter.false_positive_rate();
        let optimum = 1.44 * (1.0 / p).log2();
        println!("\nBloom filter, {items} entries, k = 32:");
        println!("  lookups (absent, incl. epoch hash) : {:.2} M/s ({:.2} M/s for the SHA-256 epoch hash alone)", f64::from(probes) / t.as_secs_f64() / 1e6, f64::from(probes) / t_hash.as_secs_f64() / 1e6);
        println!("  false positives in {probes} probes  : {hits}");
        println!(
            "  fill {:.4}, implied FP rate {:.2e} per lookup",
            filter.fill_ratio(),
            p
        );
        println!(
            "  bits per element {:.2} vs optimum 1.44·log2(1/p) = {:.2}  (ratio {:.3})",
            bits_per,
            optimum,
            bits_per / optimum
        );
    }
}
