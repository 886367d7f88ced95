//! The status engine: own test, matched exposures, check-ins and today's
//! date → colour, the day it returns to green, and the reason (SPEC §11).
//!
//! A pure function of its inputs and the signed policy, so a phone can show
//! exactly why it is yellow or red and anyone can recompute it.

use crate::matching::Exposure;
use crate::policy::{AttenuationBucket, ExposurePolicy};
use crate::region::RegionId;
use crate::time::{DayNumber, Timestamp};
use crate::window::Attenuation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The colour a phone shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// No active quarantine.
    Green,
    /// Home quarantine after a weaker exposure (7 days by default).
    Yellow,
    /// Quarantine after a close exposure (14 days) or isolation after one's
    /// own positive test.
    Red,
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Colour::Green => "GREEN",
            Colour::Yellow => "YELLOW",
            Colour::Red => "RED",
        })
    }
}

/// The user's own confirmed positive test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositiveTest {
    /// Day of the test.
    pub test_day: DayNumber,
}

/// Everything the engine decides from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// The day to decide for.
    pub today: DayNumber,
    /// The user's own positive test, if any.
    pub positive_test: Option<PositiveTest>,
    /// Every exposure matched so far.
    pub exposures: &'a [Exposure],
    /// Days the user checked in.
    pub checkins: &'a [DayNumber],
}

/// How much one exposure counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// When it started.
    pub start: Timestamp,
    /// Credited duration, seconds.
    pub duration_secs: u32,
    /// Median attenuation.
    pub attenuation: Attenuation,
    /// Its bucket under the policy.
    pub bucket: AttenuationBucket,
    /// The bucket's weight, percent.
    pub attenuation_weight_pct: u16,
    /// The infectiousness weight, percent.
    pub infectiousness_weight_pct: u16,
    /// duration × both weights, seconds.
    pub weighted_secs: u64,
    /// The region that confirmed the case.
    pub origin: RegionId,
    /// The day the phone found the match.
    pub matched_on: DayNumber,
}

/// The exposures of one day and their sum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureDay {
    /// The UTC day.
    pub day: DayNumber,
    /// Sum of the contributions, weighted seconds.
    pub weighted_secs: u64,
    /// The colour that sum reaches, if any.
    pub level: Option<Colour>,
    /// Every exposure that counted, by start time.
    pub contributions: Vec<Contribution>,
}

/// What caused a quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// The user's own positive test.
    PositiveTest {
        /// Day of the test.
        test_day: DayNumber,
    },
    /// Exposure days that reached the colour's threshold.
    Exposure {
        /// The days, oldest first.
        days: Vec<ExposureDay>,
    },
}

/// One quarantine (or isolation), active or ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// Its colour.
    pub colour: Colour,
    /// Why.
    pub cause: Cause,
    /// The day the phone learnt of it.
    pub notified_on: DayNumber,
    /// First green day under the policy, before check-in extensions.
    pub base_end: DayNumber,
    /// First green day, extended by one day per missed check-in.
    pub end: DayNumber,
    /// Quarantine days without a check-in.
    pub missed_checkins: Vec<DayNumber>,
}

/// Why the phone shows its colour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Quarantines still running today, most severe first.
    pub active: Vec<Quarantine>,
    /// Quarantines that have ended.
    pub ended: Vec<Quarantine>,
    /// Days with exposures below the yellow threshold.
    pub below_threshold: Vec<ExposureDay>,
    /// Matched exposures that did not count: shorter than the policy's
    /// minimum, or weighing nothing (too far, or outside the infectious period).
    pub ignored_exposures: usize,
    /// Thresholds used, weighted minutes (yellow, red).
    pub thresholds_minutes: (u16, u16),
}

/// The engine's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The colour to show today.
    pub colour: Colour,
    /// The first day the phone is green again, if it is not green today,
    /// assuming every check-in from today on is done.
    pub green_on: Option<DayNumber>,
    /// Why.
    pub reason: Reason,
}

/// Weighs each exposure under the policy and sums them by day (SPEC §11.1).
pub fn exposure_days(policy: &ExposurePolicy, exposures: &[Exposure]) -> Vec<ExposureDay> {
    let mut by_day: BTreeMap<DayNumber, Vec<Contribution>> = BTreeMap::new();
    for e in exposures {
        if e.duration_secs < policy.min_window_secs {
            continue;
        }
        let bucket = policy.bucket(e.attenuation.median);
        let aw = policy.attenuation_weight(bucket);
        let iw = policy.infectiousness_weight(e.days_since_onset);
        let weighted_secs = u64::from(e.duration_secs) * u64::from(aw) * u64::from(iw) / 10_000;
        if weighted_secs == 0 {
            continue;
        }
        by_day.entry(e.day()).or_default().push(Contribution {
            start: e.start,
            duration_secs: e.duration_secs,
            attenuation: e.attenuation.median,
            bucket,
            attenuation_weight_pct: aw,
            infectiousness_weight_pct: iw,
            weighted_secs,
            origin: e.origin.clone(),
            matched_on: e.matched_on,
        });
    }
    by_day
        .into_iter()
        .map(|(day, mut contributions)| {
            contributions.sort_by_key(|c| c.start);
            let weighted_secs = contributions.iter().map(|c| c.weighted_secs).sum();
            let level = if weighted_secs >= u64::from(policy.red_threshold_minutes) * 60 {
                Some(Colour::Red)
            } else if weighted_secs >= u64::from(policy.yellow_threshold_minutes) * 60 {
                Some(Colour::Yellow)
            } else {
                None
            };
            ExposureDay {
                day,
                weighted_secs,
                level,
                contributions,
            }
        })
        .collect()
}

/// Decides the colour (SPEC §11).
pub fn evaluate(policy: &ExposurePolicy, input: &StatusInput<'_>) -> Status {
    let checkins: BTreeSet<DayNumber> = input.checkins.iter().copied().collect();
    let today = input.today;
    let days = exposure_days(policy, input.exposures);
    let counted: usize = days.iter().map(|d| d.contributions.len()).sum();
    let notified = |days: &[ExposureDay]| {
        days.iter()
            .flat_map(|d| &d.contributions)
            .map(|c| c.matched_on)
            .min()
            .unwrap_or(today)
    };
    let mut quarantines = Vec::new();
    if let Some(test) = input.positive_test {
        quarantines.push((
            Colour::Red,
            Cause::PositiveTest {
                test_day: test.test_day,
            },
            test.test_day,
            test.test_day.offset(i64::from(policy.isolation_days)),
        ));
    }
    for (colour, length) in [
        (Colour::Red, policy.red_quarantine_days),
        (Colour::Yellow, policy.yellow_quarantine_days),
    ] {
        let hit: Vec<ExposureDay> = days
            .iter()
            .filter(|d| d.level == Some(colour))
            .cloned()
            .collect();
        if let Some(last) = hit.last() {
            let base_end = last.day.offset(i64::from(length));
            let notified_on = notified(&hit);
            quarantines.push((colour, Cause::Exposure { days: hit }, notified_on, base_end));
        }
    }
    let (mut active, mut ended) = (Vec::new(), Vec::new());
    for (colour, cause, notified_on, base_end) in quarantines {
        let mut end = base_end;
        let mut missed_checkins = Vec::new();
        if policy.daily_checkin {
            // SPEC §11.3: each full quarantine day after notification needs a
            // check-in; a missed one adds a day, which needs one in turn.
            let mut d = notified_on.offset(1);
            while d < end && d < today {
                if !checkins.contains(&d) {
                    missed_checkins.push(d);
                    end = end.offset(1);
                }
                d = d.offset(1);
            }
        }
        let q = Quarantine {
            colour,
            cause,
            notified_on,
            base_end,
            end,
            missed_checkins,
        };
        // SPEC §11.2: a quarantine notified "after" today (clock changes)
        // is already in force rather than ended.
        if today < end {
            active.push(q);
        } else {
            ended.push(q);
        }
    }
    active.sort_by(|a, b| b.colour.cmp(&a.colour).then(b.end.cmp(&a.end)));
    let colour = active.first().map_or(Colour::Green, |q| q.colour);
    let green_on = active.iter().map(|q| q.end).max();
    Status {
        colour,
        green_on,
        reason: Reason {
            active,
            ended,
            below_threshold: days.into_iter().filter(|d| d.level.is_none()).collect(),
            ignored_exposures: input.exposures.len() - counted,
            thresholds_minutes: (
                policy.yellow_threshold_minutes,
                policy.red_threshold_minutes,
            ),
        },
    }
}

fn minutes(weighted_secs: u64) -> String {
    format!("{}.{}", weighted_secs / 60, (weighted_secs % 60) / 6)
}

impl fmt::Display for Quarantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::PositiveTest { test_day } => {
                writeln!(
                    f,
                    "{}: isolation after your positive test on {test_day}, until {}.",
                    self.colour, self.end
                )?;
            }
            Cause::Exposure { days } => {
                let what = if self.colour == Colour::Red {
                    "close exposure"
                } else {
                    "exposure"
                };
                writeln!(
                    f,
                    "{}: quarantine after {what}, until {} (notified on {}).",
                    self.colour, self.end, self.notified_on
                )?;
                for d in days {
                    writeln!(
                        f,
                        "  {}: {} weighted minutes in total:",
                        d.day,
                        minutes(d.weighted_secs)
                    )?;
                    for c in &d.contributions {
                        writeln!(
                            f,
                            "    {} for {} min at {} dB ({}, weight {}%), infectiousness {}% → {} weighted min, confirmed in {}",
                            c.start,
                            c.duration_secs / 60,
                            c.attenuation.0,
                            c.bucket,
                            c.attenuation_weight_pct,
                            c.infectiousness_weight_pct,
                            minutes(c.weighted_secs),
                            c.origin
                        )?;
                    }
                }
            }
        }
        if !self.missed_checkins.is_empty() {
            let list: Vec<String> = self.missed_checkins.iter().map(|d| d.to_string()).collect();
            writeln!(
                f,
                "  Missed check-ins on {}: extended by {} day(s) from {}.",
                list.join(", "),
                self.missed_checkins.len(),
                self.base_end
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (yellow, red) = self.reason.thresholds_minutes;
        match self.green_on {
            Some(day) => writeln!(
                f,
                "{} until {day} (green again on {day} if you check in daily)",
                self.colour
            )?,
            None => writeln!(f, "{}", self.colour)?,
        }
        for q in &self.reason.active {
            write!(f, "{q}")?;
        }
        for q in &self.reason.ended {
            writeln!(
                f,
                "Ended: {} {} on {}.",
                q.colour,
                match q.cause {
                    Cause::PositiveTest { .. } => "isolation",
                    Cause::Exposure { .. } => "quarantine",
                },
                q.end
            )?;
        }
        for d in &self.reason.below_threshold {
            writeln!(
                f,
                "{}: {} weighted minutes of exposure, below the yellow threshold of {yellow} (red {red}).",
                d.day,
                minutes(d.weighted_secs)
            )?;
        }
        if self.reason.ignored_exposures > 0 {
            writeln!(
                f,
                "{} brief or distant encounter(s) with a confirmed case did not count.",
                self.reason.ignored_exposures
            )?;
        }
        if self.reason.active.is_empty()
            && self.reason.ended.is_empty()
            && self.reason.below_threshold.is_empty()
            && self.reason.ignored_exposures == 0
        {
            writeln!(f, "No exposure to a confirmed case found.")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::AttenuationStats;

    const D: DayNumber = DayNumber(20_000);

    fn policy() -> ExposurePolicy {
        ExposurePolicy::recommended(RegionId::new("CH").expect("valid"))
    }

    fn exposure(day: DayNumber, minutes: u32, attenuation: u8, matched_on: DayNumber) -> Exposure {
        let a = Attenuation(attenuation);
        Exposure {
            start: Timestamp(day.start().0 + 3600),
            duration_secs: minutes * 60,
            attenuation: AttenuationStats {
                min: a,
                median: a,
                mean: a,
                max: a,
                samples: minutes,
            },
            tx_power_dbm: Some(-5),
            days_since_onset: Some(2), // weight 100 %
            origin: RegionId::new("CH").expect("valid"),
            matched_on,
        }
    }

    fn all_checkins(from: DayNumber, to: DayNumber) -> Vec<DayNumber> {
        (from.0..to.0).map(DayNumber).collect()
    }

    #[test]
    fn close_contact_is_red_for_fourteen_days() {
        let e = [exposure(D, 20, 60, D.offset(1))];
        let c = all_checkins(D, D.offset(30));
        let at = |today| {
            evaluate(
                &policy(),
                &StatusInput {
                    today,
                    positive_test: None,
                    exposures: &e,
                    checkins: &c,
                },
            )
        };
        let s = at(D.offset(1));
        assert_eq!(s.colour, Colour::Red);
        assert_eq!(s.green_on, Some(D.offset(14)));
        assert!(s.to_string().contains("20.0 weighted min"), "{s}");
        assert_eq!(at(D.offset(13)).colour, Colour::Red);
        let later = at(D.offset(14));
        assert_eq!(later.colour, Colour::Green);
        assert_eq!(later.reason.ended.len(), 1);
    }

    #[test]
    fn weaker_exposure_is_yellow_and_passers_by_are_green() {
        let p = policy();
        let today = D.offset(1);
        let yellow = [exposure(D, 12, 60, today)];
        let s = evaluate(
            &p,
            &StatusInput {
                today,
                positive_test: None,
                exposures: &yellow,
                checkins: &[],
            },
        );
        assert_eq!((s.colour, s.green_on), (Colour::Yellow, Some(D.offset(7))));
        // 30 minutes far away weighs nothing; 1 minute close is under min duration.
        let green = [exposure(D, 30, 80, today), exposure(D, 1, 40, today)];
        let s = evaluate(
            &p,
            &StatusInput {
                today,
                positive_test: None,
                exposures: &green,
                checkins: &[],
            },
        );
        assert_eq!(s.colour, Colour::Green);
        assert_eq!(s.reason.ignored_exposures, 2);
        assert!(s.to_string().contains("2 brief or distant"), "{s}");
        // Medium: 15 min × 50 % = 7.5 weighted min, below yellow's 10.
        let medium = [exposure(D, 15, 70, today)];
        let s = evaluate(
            &p,
            &StatusInput {
                today,
                positive_test: None,
                exposures: &medium,
                checkins: &[],
            },
        );
        assert_eq!(s.colour, Colour::Green);
        assert_eq!(s.reason.below_threshold[0].weighted_secs, 450);
    }

    #[test]
    fn missed_checkins_extend_the_quarantine() {
        let e = [exposure(D, 12, 60, D)];
        let mut c = all_checkins(D.offset(1), D.offset(20));
        c.retain(|&d| d != D.offset(3) && d != D.offset(4));
        let at = |today| {
            evaluate(
                &policy(),
                &StatusInput {
                    today,
                    positive_test: None,
                    exposures: &e,
                    checkins: &c,
                },
            )
        };
        let s = at(D.offset(7));
        assert_eq!(s.colour, Colour::Yellow);
        assert_eq!(s.green_on, Some(D.offset(9)));
        assert_eq!(
            s.reason.active[0].missed_checkins,
            vec![D.offset(3), D.offset(4)]
        );
        assert_eq!(at(D.offset(9)).colour, Colour::Green);
    }

    #[test]
    fn own_positive_test_is_red() {
        let s = evaluate(
            &policy(),
            &StatusInput {
                today: D.offset(2),
                positive_test: Some(PositiveTest { test_day: D }),
                exposures: &[],
                checkins: &all_checkins(D, D.offset(20)),
            },
        );
        assert_eq!((s.colour, s.green_on), (Colour::Red, Some(D.offset(14))));
        assert!(s.to_string().contains("positive test"));
    }

    #[test]
    fn red_then_yellow_when_a_later_weaker_exposure_outlasts_it() {
        let e = [
            exposure(D, 20, 60, D),
            exposure(D.offset(10), 12, 60, D.offset(10)),
        ];
        let c = all_checkins(D, D.offset(30));
        let s = evaluate(
            &policy(),
            &StatusInput {
                today: D.offset(15),
                positive_test: None,
                exposures: &e,
                checkins: &c,
            },
        );
        assert_eq!((s.colour, s.green_on), (Colour::Yellow, Some(D.offset(17))));
    }
}
