//! The BLE advertisement: one legacy 31-byte advertising payload (SPEC §5).
//!
//! ```text
//! 02 01 06                 Flags: LE General Discoverable, BR/EDR not supported
//! 03 03 47 4C              Complete list of 16-bit service UUIDs: 0x4C47
//! 17 16 47 4C <20 bytes>   Service data (16-bit UUID 0x4C47): EphID ‖ sealed metadata
//! ```

use crate::error::{Error, Result};
use crate::keys::{Beacon, EncryptedMetadata, EphId, EPHID_LEN, METADATA_LEN};

/// Greenlight's 16-bit service UUID (SPEC §5.2). Not 0xFD6F, which belongs
/// to Apple and Google's exposure-notification system.
pub const SERVICE_UUID16: u16 = 0x4C47;
/// Largest legacy advertising payload.
pub const LEGACY_ADV_LEN: usize = 31;
/// Longest advertising payload the decoder reads: a reassembled extended
/// advertisement (Core Specification v5, Vol 4 Part E §7.7.65.13).
pub const MAX_ADV_LEN: usize = 1650;
/// Length of Greenlight service data after the UUID: EphID ‖ metadata.
pub const SERVICE_DATA_LEN: usize = EPHID_LEN + METADATA_LEN;

const AD_FLAGS: u8 = 0x01;
const AD_COMPLETE_UUID16: u8 = 0x03;
const AD_SERVICE_DATA_UUID16: u8 = 0x16;
/// LE General Discoverable Mode | BR/EDR Not Supported (Core Supplement A.1.3).
const FLAGS: u8 = 0x06;
const WHAT: &str = "advertisement";

/// Encodes a beacon as the 31-byte legacy advertising payload.
pub fn encode_advertisement(beacon: &Beacon) -> [u8; LEGACY_ADV_LEN] {
    let uuid = SERVICE_UUID16.to_le_bytes();
    let mut out = [0u8; LEGACY_ADV_LEN];
    out[..7].copy_from_slice(&[2, AD_FLAGS, FLAGS, 3, AD_COMPLETE_UUID16, uuid[0], uuid[1]]);
    out[7..11].copy_from_slice(&[
        1 + 2 + SERVICE_DATA_LEN as u8,
        AD_SERVICE_DATA_UUID16,
        uuid[0],
        uuid[1],
    ]);
    out[11..11 + SERVICE_DATA_LEN].copy_from_slice(&encode_service_data(beacon));
    out
}

/// The 20 service-data bytes (after the UUID), as a BLE stack that
/// advertises service data by UUID wants them.
pub fn encode_service_data(beacon: &Beacon) -> [u8; SERVICE_DATA_LEN] {
    let mut out = [0u8; SERVICE_DATA_LEN];
    out[..EPHID_LEN].copy_from_slice(&beacon.ephid.0);
    out[EPHID_LEN..].copy_from_slice(&beacon.metadata.0);
    out
}

/// Decodes the service data a BLE stack reports for UUID 0x4C47.
pub fn decode_service_data(data: &[u8]) -> Result<Beacon> {
    if data.len() != SERVICE_DATA_LEN {
        return Err(Error::InvalidField {
            what: WHAT,
            field: "service data",
            reason: format!("{} bytes, expected {SERVICE_DATA_LEN}", data.len()),
        });
    }
    let mut ephid = [0u8; EPHID_LEN];
    ephid.copy_from_slice(&data[..EPHID_LEN]);
    let mut metadata = [0u8; METADATA_LEN];
    metadata.copy_from_slice(&data[EPHID_LEN..]);
    Ok(Beacon {
        ephid: EphId(ephid),
        metadata: EncryptedMetadata(metadata),
    })
}

/// Finds and decodes the Greenlight service data in a raw advertising
/// payload. Other AD structures, in any order, are skipped; a zero length
/// byte ends the payload (the rest is padding). A payload with no Greenlight
/// service data is [`Error::NotGreenlight`]; one with two is refused.
pub fn decode_advertisement(payload: &[u8]) -> Result<Beacon> {
    if payload.len() > MAX_ADV_LEN {
        return Err(Error::TooLarge {
            what: WHAT,
            field: "bytes",
            count: payload.len() as u64,
            max: MAX_ADV_LEN as u64,
        });
    }
    let mut found = None;
    let mut rest = payload;
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 {
            break;
        }
        let len = usize::from(len);
        if tail.len() < len {
            return Err(Error::Truncated {
                what: WHAT,
                needed: len,
                remaining: tail.len(),
            });
        }
        let (structure, next) = tail.split_at(len);
        rest = next;
        let (ad_type, data) = (structure[0], &structure[1..]);
        if ad_type == AD_SERVICE_DATA_UUID16
            && data.len() >= 2
            && u16::from_le_bytes([data[0], data[1]]) == SERVICE_UUID16
        {
            if found.is_some() {
                return Err(Error::InvalidField {
                    what: WHAT,
                    field: "service data",
                    reason: "Greenlight service data appears twice".into(),
                });
            }
            found = Some(decode_service_data(&data[2..])?);
        }
    }
    found.ok_or(Error::NotGreenlight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon() -> Beacon {
        Beacon {
            ephid: EphId([0xAB; 16]),
            metadata: EncryptedMetadata([1, 2, 3, 4]),
        }
    }

    #[test]
    fn fills_exactly_one_legacy_advertisement() {
        let adv = encode_advertisement(&beacon());
        assert_eq!(adv.len(), 31);
        assert_eq!(
            &adv[..11],
            &[2, 1, 6, 3, 3, 0x47, 0x4C, 23, 0x16, 0x47, 0x4C]
        );
        assert_eq!(decode_advertisement(&adv), Ok(beacon()));
    }

    #[test]
    fn skips_foreign_structures_and_padding() {
        let adv = encode_advertisement(&beacon());
        let mut payload = vec![2, 0x0A, 0xF4]; // TX power level first
        payload.extend_from_slice(&adv[7..]);
        payload.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode_advertisement(&payload), Ok(beacon()));
    }

    #[test]
    fn refuses_foreign_and_broken_payloads() {
        // Apple/Google exposure notification service data: not ours.
        let gaen = [
            3, 3, 0x6F, 0xFD, 23, 0x16, 0x6F, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0,
        ];
        assert_eq!(decode_advertisement(&gaen), Err(Error::NotGreenlight));
        assert!(matches!(
            decode_advertisement(&encode_advertisement(&beacon())[..20]),
            Err(Error::Truncated { .. })
        ));
        let mut short = encode_advertisement(&beacon()).to_vec();
        short[7] = 10;
        short.truncate(18);
        assert!(matches!(
            decode_advertisement(&short),
            Err(Error::InvalidField { .. })
        ));
        let mut twice = encode_advertisement(&beacon()).to_vec();
        twice.extend_from_slice(&encode_advertisement(&beacon())[7..]);
        assert!(matches!(
            decode_advertisement(&twice),
            Err(Error::InvalidField { .. })
        ));
        assert!(matches!(
            decode_advertisement(&[1; 1651]),
            Err(Error::TooLarge { .. })
        ));
    }
}
