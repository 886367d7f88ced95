//! Region identifiers: who publishes a batch or a policy (SPEC §3).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest region identifier, in bytes.
pub const MAX_REGION_ID_LEN: usize = 16;

/// A health authority's region, e.g. `CH-ZH` or `DE`: 1 to 16 characters
/// from `A–Z`, `0–9` and `-` (SPEC §3.1). Held inline (no allocation), so
/// the exposures and reasons that name their origin copy it for free.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionId {
    len: u8,
    /// The identifier's bytes, zero after `len`.
    bytes: [u8; MAX_REGION_ID_LEN],
}

impl RegionId {
    /// Checks and wraps a region identifier.
    pub fn new(id: &str) -> Result<RegionId> {
        let ok_len = (1..=MAX_REGION_ID_LEN).contains(&id.len());
        let ok_chars = id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok_len && ok_chars {
            let mut bytes = [0u8; MAX_REGION_ID_LEN];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            Ok(RegionId {
                len: id.len() as u8,
                bytes,
            })
        } else {
            Err(Error::InvalidField {
                what: "region id",
                field: "region",
                reason: format!(
                    "{id:?} must be 1 to {MAX_REGION_ID_LEN} characters of A-Z, 0-9 and '-'"
                ),
            })
        }
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("a region id is checked to be ASCII when made")
    }
}

impl PartialOrd for RegionId {
    fn partial_cmp(&self, other: &RegionId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RegionId {
    /// The order of the identifiers' text.
    fn cmp(&self, other: &RegionId) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RegionId").field(&self.as_str()).finish()
    }
}

impl TryFrom<String> for RegionId {
    type Error = Error;
    fn try_from(s: String) -> Result<RegionId> {
        RegionId::new(&s)
    }
}

impl From<RegionId> for String {
    fn from(r: RegionId) -> String {
        r.as_str().to_owned()
    }
}

impl std::str::FromStr for RegionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<RegionId> {
        RegionId::new(s)
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_codes_and_refuses_the_rest() {
        assert!(RegionId::new("CH-ZH").is_ok());
        assert!(RegionId::new("DE").is_ok());
        for bad in ["", "ch", "A B", "ÄÖ", "ABCDEFGHIJKLMNOPQ"] {
            assert!(RegionId::new(bad).is_err(), "{bad:?} accepted");
        }
        let longest = RegionId::new("ABCDEFGHIJKLMNOP").expect("16 characters");
        assert_eq!(longest.as_str(), "ABCDEFGHIJKLMNOP");
        assert_eq!(format!("{longest:?}"), "RegionId(\"ABCDEFGHIJKLMNOP\")");
    }

    #[test]
    fn orders_and_serializes_as_its_text() {
        let ids: Vec<RegionId> = ["DE", "CH-ZH", "CH", "A"]
            .iter()
            .map(|s| RegionId::new(s).expect("valid"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let text: Vec<&str> = sorted.iter().map(RegionId::as_str).collect();
        assert_eq!(text, ["A", "CH", "CH-ZH", "DE"]);
        assert_eq!(serde_json::to_string(&ids[1]).expect("json"), "\"CH-ZH\"");
        let back: RegionId = serde_json::from_str("\"CH-ZH\"").expect("json");
        assert_eq!(back, ids[1]);
        assert!(serde_json::from_str::<RegionId>("\"ch\"").is_err());
    }
}
