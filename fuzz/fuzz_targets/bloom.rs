//! Bloom filter bitmaps as they arrive in an unlinkable batch.
#![no_main]
use greenlight_protocol::{EpochFilter, EpochHash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (probe, bits) = data.split_at(16);
    if let Ok(filter) = EpochFilter::from_bits(bits.to_vec(), 1) {
        let mut item = [0u8; 16];
        item.copy_from_slice(probe);
        let _ = filter.contains(&EpochHash(item));
    }
});
