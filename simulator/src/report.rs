//! Machine-readable outputs: the per-day CSV and the JSON summary. Both are
//! byte-for-byte the same for the same scenario and seed.

use crate::scenario::Scenario;
use crate::sim::{DailyRecord, RunResult, Summary};
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Column names of the per-day CSV, in order.
pub const CSV_HEADER: &str = "day,date,new_infections,cumulative_infections,infectious,hospitalised,deaths,positive_tests,isolating,quarantined,contacts,green,yellow,red,notifications,notifications_true,notifications_false,uploads,batch_entries,batch_bytes,stored_windows,windows_looked_up,matched_windows";

/// The per-day records as CSV text.
pub fn daily_csv(days: &[DailyRecord]) -> String {
    let mut out = String::with_capacity(64 * (days.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for d in days {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            d.day,
            d.date,
            d.new_infections,
            d.cumulative_infections,
            d.infectious,
            d.hospitalised,
            d.deaths,
            d.positive_tests,
            d.isolating,
            d.quarantined,
            d.contacts,
            d.green,
            d.yellow,
            d.red,
            d.notifications,
            d.notifications_true,
            d.notifications_false,
            d.uploads,
            d.batch_entries,
            d.batch_bytes,
            d.stored_windows,
            d.windows_looked_up,
            d.matched_windows
        );
    }
    out
}

/// The JSON summary document of a run, with a counterfactual run without
/// the app when one was made.
#[derive(Debug, Serialize)]
pub struct SummaryDocument<'a> {
    /// The scenario, every field written out.
    pub scenario: &'a Scenario,
    /// Totals with the app.
    pub summary: &'a Summary,
    /// Totals of the same population and seed without the app.
    pub without_app: Option<&'a Summary>,
}

/// The JSON summary as text.
pub fn summary_json(run: &RunResult, without_app: Option<&RunResult>) -> String {
    let doc = SummaryDocument {
        scenario: &run.scenario,
        summary: &run.summary,
        without_app: without_app.map(|r| &r.summary),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("summaries are plain data");
    text.push('\n');
    text
}

/// Writes `text` to `path`, naming the file on failure.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
