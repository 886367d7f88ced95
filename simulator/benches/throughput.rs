//! Agent-days per second and peak memory at 100,000 and 1,000,000 agents,
//! on 1 and 2 threads, 60 days, 60 % adoption, compact mode. Set
//! `GREENLIGHT_SIM_BENCH_AGENTS` (e.g. `100000`) to measure fewer sizes.

fn main() -> anyhow::Result<()> {
    let agents: Vec<u32> = std::env::var("GREENLIGHT_SIM_BENCH_AGENTS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let base = greenlight_sim::Scenario::default();
    for n in agents {
        for threads in [1, 2] {
            let m = greenlight_sim::bench::measure(&base, n, 60, threads)?;
            println!("{}", greenlight_sim::bench::row(&m));
        }
    }
    Ok(())
}
