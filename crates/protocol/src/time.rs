//! Protocol time: Unix seconds, 15-minute epochs and UTC days (SPEC §2).
//!
//! The protocol never reads a clock; every function takes the time it needs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Seconds in one epoch: an EphID is broadcast for 15 minutes (SPEC §2).
pub const EPOCH_SECONDS: u64 = 15 * 60;
/// Epochs in one UTC day.
pub const EPOCHS_PER_DAY: u32 = 96;
/// Seconds in one UTC day.
pub const DAY_SECONDS: u64 = 86_400;
/// Days a phone keeps sightings and a server keeps keys (SPEC §2).
pub const RETENTION_DAYS: u32 = 14;

/// A point in time, seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

/// A UTC day, counted from 1970-01-01 (day 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DayNumber(pub u32);

/// A 15-minute epoch, counted from 1970-01-01T00:00Z (epoch 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EpochNumber(pub u32);

/// The position of an epoch within its UTC day, `0..96`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EpochIndex(u8);

impl Timestamp {
    /// The epoch this instant falls in.
    pub fn epoch(self) -> EpochNumber {
        EpochNumber(u32::try_from(self.0 / EPOCH_SECONDS).unwrap_or(u32::MAX))
    }

    /// The UTC day this instant falls in.
    pub fn day(self) -> DayNumber {
        DayNumber(u32::try_from(self.0 / DAY_SECONDS).unwrap_or(u32::MAX))
    }

    /// Whole seconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn seconds_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl EpochNumber {
    /// The day this epoch belongs to.
    pub fn day(self) -> DayNumber {
        DayNumber(self.0 / EPOCHS_PER_DAY)
    }

    /// The position of this epoch within its day.
    pub fn index(self) -> EpochIndex {
        // Invariant: the remainder of a division by 96 is below 96.
        EpochIndex((self.0 % EPOCHS_PER_DAY) as u8)
    }

    /// The first second of this epoch.
    pub fn start(self) -> Timestamp {
        Timestamp(u64::from(self.0) * EPOCH_SECONDS)
    }

    /// This epoch moved by `delta` epochs, saturating at the ends of the range.
    pub fn offset(self, delta: i64) -> EpochNumber {
        let moved = i64::from(self.0).saturating_add(delta);
        EpochNumber(moved.clamp(0, i64::from(u32::MAX)) as u32)
    }
}

impl EpochIndex {
    /// The day's first epoch, 00:00–00:15 UTC.
    pub const FIRST: EpochIndex = EpochIndex(0);

    /// The index `i` if it is below 96.
    pub fn new(i: u8) -> Option<EpochIndex> {
        (u32::from(i) < EPOCHS_PER_DAY).then_some(EpochIndex(i))
    }

    /// Every index of a day, in order.
    pub fn all() -> impl Iterator<Item = EpochIndex> {
        (0..EPOCHS_PER_DAY as u8).map(EpochIndex)
    }

    /// The index as a number in `0..96`.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl DayNumber {
    /// The epoch at position `index` within this day.
    pub fn epoch(self, index: EpochIndex) -> EpochNumber {
        EpochNumber(
            self.0
                .saturating_mul(EPOCHS_PER_DAY)
                .saturating_add(u32::from(index.0)),
        )
    }

    /// The first second of this day.
    pub fn start(self) -> Timestamp {
        Timestamp(u64::from(self.0) * DAY_SECONDS)
    }

    /// This day moved by `delta` days, saturating at the ends of the range.
    pub fn offset(self, delta: i64) -> DayNumber {
        let moved = i64::from(self.0).saturating_add(delta);
        DayNumber(moved.clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Signed number of days from `other` to `self`.
    pub fn days_since(self, other: DayNumber) -> i64 {
        i64::from(self.0) - i64::from(other.0)
    }

    /// The calendar date, or `None` beyond year 9999.
    pub fn date(self) -> Option<time::Date> {
        // Julian day 2_440_588 is 1970-01-01.
        let julian = i32::try_from(self.0).ok()?.checked_add(2_440_588)?;
        time::Date::from_julian_day(julian).ok()
    }

    /// The day of a calendar date, or `None` before 1970.
    pub fn from_date(date: time::Date) -> Option<DayNumber> {
        u32::try_from(date.to_julian_day() - 2_440_588)
            .ok()
            .map(DayNumber)
    }
}

impl fmt::Display for DayNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.date() {
            Some(date) => write!(f, "{date}"),
            None => write!(f, "day {}", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs_of_day = self.0 % DAY_SECONDS;
        write!(
            f,
            "{} {:02}:{:02}",
            self.day(),
            secs_of_day / 3600,
            (secs_of_day % 3600) / 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_and_days_line_up() {
        let t = Timestamp(1_700_000_000);
        assert_eq!(t.epoch().day(), t.day());
        assert_eq!(t.day().epoch(t.epoch().index()), t.epoch());
        assert!(t.epoch().start() <= t && t.0 - t.epoch().start().0 < EPOCH_SECONDS);
    }

    #[test]
    fn dates_print_as_iso() {
        assert_eq!(DayNumber(0).to_string(), "1970-01-01");
        assert_eq!(DayNumber(20_415).to_string(), "2025-11-23");
        let d = time::macros::date!(2026 - 11 - 23);
        assert_eq!(DayNumber::from_date(d).and_then(DayNumber::date), Some(d));
        assert_eq!(
            Timestamp(20_415 * 86_400 + 3_660).to_string(),
            "2025-11-23 01:01"
        );
    }

    #[test]
    fn epoch_index_is_bounded() {
        assert!(EpochIndex::new(95).is_some());
        assert!(EpochIndex::new(96).is_none());
        assert_eq!(EpochIndex::all().count(), 96);
    }
}
