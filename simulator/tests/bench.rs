//! `greenlight-sim bench` measures every population on every thread count,
//! each in its own process, and prints one row per measurement.

mod common;

#[test]
fn bench_prints_a_row_per_population_and_thread_count() {
    let out = common::sim([
        "bench",
        "--quiet",
        "--agents",
        "2000,3000",
        "--threads",
        "1,2",
        "--days",
        "5",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("adoption 60 %"), "{out}");
    let expected = [(2000, 1), (2000, 2), (3000, 1), (3000, 2)];
    for (line, (agents, threads)) in lines[1..].iter().zip(expected) {
        assert!(
            line.trim_start()
                .starts_with(&format!("{agents} agents × 5 days, {threads} thread(s):")),
            "{line}"
        );
        let (before, _) = line.split_once(" M agent-days/s").expect("a rate");
        let rate: f64 = before
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .expect("a number of agent-days");
        assert!(rate > 0.0, "{line}");
        let (_, rss) = line.split_once("peak RSS ").expect("peak memory");
        let mib: f64 = rss
            .trim_end_matches(" MiB")
            .parse()
            .expect("peak memory in MiB");
        assert!(mib > 1.0, "{line}");
    }
}

#[test]
fn bench_refuses_a_bad_population_before_measuring_anything() {
    let run = common::sim_output([
        "bench",
        "--quiet",
        "--agents",
        "2000,5",
        "--threads",
        "1",
        "--days",
        "5",
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("population.agents = 5 is out of range, allowed 10 to"),
        "{err}"
    );
    // Nothing was measured: not even the valid population before it.
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(!out.contains("agent-days/s"), "{out}");
}

#[test]
fn bench_refuses_zero_threads() {
    let run = common::sim_output(["bench", "--quiet", "--agents", "2000", "--threads", "0"]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("thread count must be at least 1"), "{err}");
}
