//! Batch files: raw bytes, and the same bytes behind a valid header and
//! signature so that the fuzzer reaches the body parser.
#![no_main]
use greenlight_protocol::ed25519_dalek::{Signer, SigningKey};
use greenlight_protocol::{KeyBatch, RegionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let region = RegionId::new("CH").expect("valid region");
    let _ = KeyBatch::verify(data, &region, &key.verifying_key());
    let mut body = b"GLKB\x01".to_vec();
    body.extend_from_slice(&data[..data.len().min(1)]);
    body.extend_from_slice(b"\x02CH");
    body.extend_from_slice(data.get(1..).unwrap_or_default());
    body.extend_from_slice(&key.sign(&body).to_bytes());
    if let Ok(batch) = KeyBatch::verify(&body, &region, &key.verifying_key()) {
        // Whatever verifies must re-sign to the same bytes.
        assert_eq!(batch.sign(&key).expect("a verified batch is valid"), body);
    }
});
