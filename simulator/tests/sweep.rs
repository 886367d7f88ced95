//! A sweep over adoption writes its table and one comparative plot.

mod common;

#[test]
fn adoption_sweep_writes_csv_and_plot() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let scenario = dir.path().join("small.toml");
    std::fs::write(
        &scenario,
        "days = 15\ninitial_infections = 10\n[population]\nagents = 1000\n",
    )
    .expect("write the scenario");
    let out = dir.path().join("sweep");
    let args = [
        "--quiet",
        "sweep",
        "--parameter",
        "app.adoption",
        "--values",
        "0:1:0.5",
        "--scenario",
    ]
    .map(std::ffi::OsStr::new);
    common::sim(
        args.into_iter()
            .chain([scenario.as_os_str(), "--out".as_ref(), out.as_os_str()]),
    );
    let csv = std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("app.adoption,infections"));
    assert!(
        rows[1].starts_with("0,") && rows[3].starts_with("1,"),
        "{csv}"
    );
    assert!(
        out.join("daily-app.adoption-0.5.csv").is_file(),
        "one daily CSV per value"
    );
    for plot in ["sweep.svg", "sweep.png"] {
        let meta = std::fs::metadata(out.join(plot)).expect("the plot exists");
        assert!(meta.len() > 1000, "{plot} is too small");
    }
}

#[test]
fn sweep_values_parse_and_bad_parameters_are_refused() {
    use greenlight_sim::sweep::parse_values;
    assert_eq!(
        parse_values("0:1:0.25").expect("valid"),
        vec![0.0, 0.25, 0.5, 0.75, 1.0]
    );
    assert_eq!(parse_values("0.1, 0.3").expect("valid"), vec![0.1, 0.3]);
    assert!(parse_values("1:0:0.1").is_err());
    let base = greenlight_sim::Scenario::default();
    assert!(base.with_parameter("app.adoptoin", 0.5).is_err());
    assert!(base.with_parameter("app.adoption", 1.5).is_err());
    assert_eq!(
        base.with_parameter("population.agents", 5000.0)
            .expect("valid")
            .population
            .agents,
        5000
    );
}
