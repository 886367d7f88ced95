//! The phone's daily aggregate report (SPEC §19): once a day, for the day
//! before, the colour and whether the phone was notified and the user
//! uploaded that day, as a Prio3 measurement split between two
//! aggregators and sealed to each one's pinned HPKE key. Only the leader
//! is contacted; it never sees more than its own share. Off unless an
//! `[aggregator]` table is configured.

use crate::sync::{lock, SharedPhone};
use crate::{Error, Phone, Result};
use greenlight_analytics::{prepare_report, AggregatorConfig, Measurement};
use greenlight_client::{Client, FetchError};
use greenlight_protocol::{DayNumber, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest answer the leader may send to a report.
const MAX_ANSWER_BYTES: u64 = 16 * 1024;

/// The setting holding the last day reported (u32, big-endian).
const REPORTED_SETTING: &str = "aggregate_reported_day";

/// The `[aggregator]` table of the daemon's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The leader aggregator's base URL (the home server, usually).
    pub leader_url: String,
    /// The leader's pinned HPKE configuration (`key_id`, `public_key`).
    pub leader: AggregatorConfig,
    /// The helper's pinned HPKE configuration, from the other organization.
    pub helper: AggregatorConfig,
    /// Seconds between checks whether yesterday's report is due.
    #[serde(default = "default_check_secs")]
    pub check_every_secs: u64,
}

fn default_check_secs() -> u64 {
    3600
}

/// What the phone reports for `day`, from what it knows now.
pub fn measurement_for(phone: &Phone, day: DayNumber) -> Measurement {
    Measurement {
        colour: phone.status(day).colour,
        notified: phone.exposures().iter().any(|m| m.matched_on == Some(day)),
        // The positive test is recorded on the day of the upload.
        uploaded: phone.positive_test().is_some_and(|p| p.test_day == day),
    }
}

/// What one attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The leader accepted the report for this day.
    Accepted(DayNumber),
    /// This day was reported already (or the leader already has it).
    AlreadyReported(DayNumber),
}

/// Sends the report for the day before `now`'s, unless it was sent.
pub async fn send_daily_report(
    leader: &Client,
    config: &ReportConfig,
    phone: &SharedPhone,
    now: Timestamp,
) -> Result<Sent> {
    let day = now.day().offset(-1);
    let report = {
        let p = lock(phone);
        let last = p
            .setting(REPORTED_SETTING)?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes);
        if last.is_some_and(|last| last >= day.0) {
            return Ok(Sent::AlreadyReported(day));
        }
        prepare_report(
            &measurement_for(&p, day),
            now,
            day,
            p.region(),
            &config.leader,
            &config.helper,
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| Error::Config(format!("aggregator: {e}")))?
    };
    let server_error = |e: FetchError| Error::server(&config.leader_url, e);
    let answer = leader
        .post_json("/v1/reports", None, &report, MAX_ANSWER_BYTES)
        .await;
    let outcome = match answer {
        Ok(_) => Sent::Accepted(day),
        // The leader has it already, or has closed the day: never resend.
        Err(FetchError::Status { code, .. })
            if code == "duplicate_report" || code == "batch_closed" =>
        {
            Sent::AlreadyReported(day)
        }
        Err(e) => return Err(server_error(e)),
    };
    lock(phone).set_setting(REPORTED_SETTING, &day.0.to_be_bytes())?;
    Ok(outcome)
}

/// Checks every `check_every_secs` whether yesterday's report is due and
/// sends it; a failure is retried at the next check.
pub async fn report_loop(
    config: ReportConfig,
    phone: SharedPhone,
    clock: fn() -> Timestamp,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let leader = match Client::with_timeout(&config.leader_url, Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make an HTTP client; no aggregate reports");
            return;
        }
    };
    let mut wait = Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match send_daily_report(&leader, &config, &phone, clock()).await {
            Ok(Sent::Accepted(_)) => tracing::info!("sent the daily aggregate report"),
            Ok(Sent::AlreadyReported(_)) => {}
            Err(e) => tracing::warn!(error = %e, "daily aggregate report failed; retried later"),
        }
        wait = Duration::from_secs(config.check_every_secs.max(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenlight_protocol::{Colour, RegionId};

    #[test]
    fn the_measurement_says_what_happened_that_day() {
        let dir = tempfile::tempdir().expect("temp dir");
        let today = DayNumber(20_500);
        let yesterday = today.offset(-1);
        let region = RegionId::new("CH").expect("region");
        let mut phone = Phone::open(dir.path(), region, today).expect("phone opens");
        let before = measurement_for(&phone, yesterday);
        assert_eq!(
            before,
            Measurement {
                colour: Colour::Green,
                notified: false,
                uploaded: false
            }
        );
        phone.record_positive_test(yesterday).expect("recorded");
        let after = measurement_for(&phone, yesterday);
        assert_eq!((after.colour, after.uploaded), (Colour::Red, true));
        assert!(
            !measurement_for(&phone, today).uploaded,
            "uploaded that day only"
        );
    }
}
