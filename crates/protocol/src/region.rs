//! Region identifiers: who publishes a batch or a policy (SPEC §3).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest region identifier, in bytes.
pub const MAX_REGION_ID_LEN: usize = 16;

/// A health authority's region, e.g. `CH-ZH` or `DE`: 1 to 16 characters
/// from `A–Z`, `0–9` and `-` (SPEC §3.1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionId(String);

impl RegionId {
    /// Checks and wraps a region identifier.
    pub fn new(id: &str) -> Result<RegionId> {
        let ok_len = (1..=MAX_REGION_ID_LEN).contains(&id.len());
        let ok_chars = id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok_len && ok_chars {
            Ok(RegionId(id.to_owned()))
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
        &self.0
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
        r.0
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
        f.write_str(&self.0)
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
    }
}
