//! Criterion benchmarks of the protocol's hot paths:
//! `cargo bench -p greenlight-protocol --bench protocol`.
//! `--bench figures` prints the derived figures (ratios, bits per element).

mod workload;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use greenlight_protocol::*;

fn derivation(c: &mut Criterion) {
    let mut g = c.benchmark_group("ephid");
    let key = DailyKey::from_bytes([7; 32]);
    g.throughput(Throughput::Elements(96));
    g.bench_function("derive_day_hkdf_and_96_ephids", |b| {
        b.iter(|| black_box(key.ephid_generator(black_box(workload::DAY0)).all_ephids()))
    });
    g.throughput(Throughput::Elements(1));
    let gen = key.ephid_generator(workload::DAY0);
    let index = EpochIndex::new(42).expect("below 96");
    g.bench_function("one_ephid_random_access", |b| {
        b.iter(|| black_box(gen.ephid(black_box(index))))
    });
    g.bench_function("advertisement_encode_decode", |b| {
        let beacon = gen.beacon(index, Metadata { tx_power_dbm: -5 });
        b.iter(|| decode_advertisement(&encode_advertisement(black_box(&beacon))))
    });
    g.finish();
}

fn matching(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let batch = workload::batch(KEYS, 1);
    let windows = workload::windows(&batch, 20_000, 20, 2);
    let options = MatchOptions::from(&ExposurePolicy::recommended(batch.region.clone()));
    let mut g = c.benchmark_group("matching_100k_keys_20k_windows");
    g.sample_size(10);
    g.throughput(Throughput::Elements((KEYS * 96) as u64));
    g.bench_function("raw_chacha20_keystream", |b| {
        b.iter(|| workload::raw_keystream(KEYS))
    });
    g.bench_function("prepare_and_match", |b| {
        b.iter(|| {
            MatchIndex::prepare(&batch)
                .match_windows(&windows, &options, workload::DAY0.offset(14))
                .len()
        })
    });
    let index = MatchIndex::prepare(&batch);
    g.throughput(Throughput::Elements(windows.len() as u64));
    g.bench_function("match_only", |b| {
        b.iter(|| {
            index
                .match_windows(&windows, &options, workload::DAY0.offset(14))
                .len()
        })
    });
    g.finish();
}

fn bloom(c: &mut Criterion) {
    const ITEMS: usize = 1_000_000;
    let mut filter = EpochFilter::with_capacity(ITEMS).expect("valid size");
    for i in 0..ITEMS as u32 {
        filter.insert(&EpochHash::new(&EphId([1; 16]), EpochNumber(i)));
    }
    let mut g = c.benchmark_group("bloom_1m_entries");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u32;
    g.bench_function("lookup_absent", |b| {
        b.iter_batched(
            || {
                n = n.wrapping_add(1);
                EpochHash::new(&EphId([2; 16]), EpochNumber(n))
            },
            |h| filter.contains(&h),
            BatchSize::SmallInput,
        )
    });
    let present = EpochHash::new(&EphId([1; 16]), EpochNumber(77));
    g.bench_function("lookup_present", |b| {
        b.iter(|| filter.contains(black_box(&present)))
    });
    g.bench_function("epoch_hash", |b| {
        b.iter(|| EpochHash::new(black_box(&EphId([3; 16])), EpochNumber(5)))
    });
    g.finish();
}

criterion_group!(benches, derivation, matching, bloom);
criterion_main!(benches);
