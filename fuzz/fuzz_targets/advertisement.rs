//! Raw BLE advertising payloads and service data, as any nearby radio can send them.
#![no_main]
use greenlight_protocol::{decode_advertisement, decode_service_data, encode_advertisement};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(beacon) = decode_advertisement(data) {
        // Whatever decodes must re-encode to something that decodes the same.
        assert_eq!(decode_advertisement(&encode_advertisement(&beacon)), Ok(beacon));
    }
    let _ = decode_service_data(data);
});
