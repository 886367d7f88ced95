//! What a phone reports and what the aggregate says (SPEC §19.1).

use greenlight_protocol::Colour;
use serde::{Deserialize, Serialize};

/// Number of histogram buckets: colour (3) × notified (2) × uploaded (2).
pub const BUCKETS: usize = 12;

/// One phone's facts for one day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    /// The colour shown at the end of the day.
    pub colour: Colour,
    /// Whether the phone was notified of an exposure that day.
    pub notified: bool,
    /// Whether the user uploaded their keys that day.
    pub uploaded: bool,
}

impl Measurement {
    /// The one histogram bucket this measurement sets (SPEC §19.1):
    /// `4·colour + 2·notified + uploaded`, colour green 0, yellow 1, red 2.
    pub fn bucket(&self) -> usize {
        let colour = match self.colour {
            Colour::Green => 0,
            Colour::Yellow => 1,
            Colour::Red => 2,
        };
        4 * colour + 2 * usize::from(self.notified) + usize::from(self.uploaded)
    }

    /// The measurement a bucket stands for, if it is in range.
    pub fn from_bucket(bucket: usize) -> Option<Measurement> {
        let colour = match bucket / 4 {
            0 => Colour::Green,
            1 => Colour::Yellow,
            2 => Colour::Red,
            _ => return None,
        };
        Some(Measurement {
            colour,
            notified: bucket & 2 != 0,
            uploaded: bucket & 1 != 0,
        })
    }
}

/// Counts over a batch: the 12 buckets and their marginals. With
/// differential privacy on, each bucket carries noise and is clamped at 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Reports per bucket, indexed by [`Measurement::bucket`].
    pub buckets: [u64; BUCKETS],
}

impl Counts {
    fn sum_where(&self, f: impl Fn(&Measurement) -> bool) -> u64 {
        (0..BUCKETS)
            .filter(|b| Measurement::from_bucket(*b).is_some_and(|m| f(&m)))
            .map(|b| self.buckets[b])
            .sum()
    }

    /// Phones that were green.
    pub fn green(&self) -> u64 {
        self.sum_where(|m| m.colour == Colour::Green)
    }

    /// Phones that were yellow.
    pub fn yellow(&self) -> u64 {
        self.sum_where(|m| m.colour == Colour::Yellow)
    }

    /// Phones that were red.
    pub fn red(&self) -> u64 {
        self.sum_where(|m| m.colour == Colour::Red)
    }

    /// Phones notified of an exposure that day.
    pub fn notified(&self) -> u64 {
        self.sum_where(|m| m.notified)
    }

    /// Phones whose users uploaded keys that day.
    pub fn uploaded(&self) -> u64 {
        self.sum_where(|m| m.uploaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_a_bijection() {
        for b in 0..BUCKETS {
            let m = Measurement::from_bucket(b).expect("in range");
            assert_eq!(m.bucket(), b);
        }
        assert_eq!(Measurement::from_bucket(BUCKETS), None);
    }
}
