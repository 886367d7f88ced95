//! The same scenario and seed give byte-identical outputs, whatever the
//! number of threads; another seed gives another epidemic.

mod common;

use greenlight_sim::{report, sim};

fn outputs(s: &greenlight_sim::Scenario, threads: usize) -> (String, String) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let run = pool
        .install(|| sim::run(s, |_| {}))
        .expect("the run succeeds");
    (
        report::daily_csv(&run.days),
        report::summary_json(&run, None),
    )
}

#[test]
fn same_seed_gives_identical_csv_and_json_on_any_thread_count() {
    let s = common::town(0.6, 7);
    let (csv1, json1) = outputs(&s, 1);
    let (csv2, json2) = outputs(&s, 2);
    let (csv3, json3) = outputs(&s, 3);
    assert_eq!(csv1, csv2);
    assert_eq!(json1, json2);
    assert_eq!(csv1, csv3);
    assert_eq!(json1, json3);
    assert!(csv1.lines().count() == 41, "one header and 40 days");

    let (other, _) = outputs(&common::town(0.6, 8), 2);
    assert_ne!(csv1, other, "another seed gives another epidemic");
}

#[test]
fn the_cli_writes_identical_files_for_the_same_seed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let scenario = dir.path().join("town.toml");
    std::fs::write(
        &scenario,
        "name = \"cli\"\ndays = 20\ninitial_infections = 10\n[population]\nagents = 1500\n",
    )
    .expect("write the scenario");
    let run = |out: &str| {
        let out = dir.path().join(out);
        let args = ["--quiet", "run", "--seed", "5", "--scenario"].map(std::ffi::OsStr::new);
        common::sim(args.into_iter().chain([
            scenario.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ]));
    };
    run("a");
    run("b");
    for file in ["daily.csv", "daily-without-app.csv", "summary.json"] {
        let a = std::fs::read(dir.path().join("a").join(file)).expect("output a");
        let b = std::fs::read(dir.path().join("b").join(file)).expect("output b");
        assert_eq!(a, b, "{file} differs between two runs with the same seed");
    }
    for plot in ["epidemic.svg", "epidemic.png", "colours.svg", "colours.png"] {
        assert!(
            dir.path().join("a").join(plot).is_file(),
            "{plot} is missing"
        );
    }
}
