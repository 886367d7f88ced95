//! Policy files: raw bytes, and the same bytes behind a valid signature.
#![no_main]
use greenlight_protocol::ed25519_dalek::{Signer, SigningKey};
use greenlight_protocol::{ExposurePolicy, RegionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let region = RegionId::new("CH").expect("valid region");
    let _ = ExposurePolicy::verify(data, &region, &key.verifying_key());
    let mut body = b"GLPL\x01\x02CH".to_vec();
    body.extend_from_slice(data);
    body.extend_from_slice(&key.sign(&body).to_bytes());
    if let Ok(policy) = ExposurePolicy::verify(&body, &region, &key.verifying_key()) {
        assert_eq!(policy.sign(&key).expect("a verified policy is valid"), body);
    }
});
