//! Small scenarios that run in seconds in a debug build, and the
//! `greenlight-sim` binary run as a user runs it.
// Each test file uses part of this.
#![allow(dead_code)]

use greenlight_sim::Scenario;
use std::ffi::OsStr;
use std::process::Output;

/// Runs `greenlight-sim` with `args` and returns how it ended and what it
/// printed on each stream.
pub fn sim_output<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_greenlight-sim"))
        .args(args)
        .output()
        .expect("run greenlight-sim")
}

/// Runs `greenlight-sim` with `args`, fails the test with what it said on
/// standard error if it fails, and returns what it printed.
pub fn sim<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    let run = sim_output(args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// A town of 3,000 with the default parameters, 40 days, the given adoption.
pub fn town(adoption: f64, seed: u64) -> Scenario {
    let mut s = Scenario {
        name: "town".into(),
        seed,
        days: 40,
        initial_infections: 15,
        ..Scenario::default()
    };
    s.population.agents = 3_000;
    s.app.adoption = adoption;
    s.validate().expect("the test scenario is valid");
    s
}
