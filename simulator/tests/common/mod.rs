//! Small scenarios that run in seconds in a debug build.

use greenlight_sim::Scenario;

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
