//! Run the host checks and the planner on this machine:
//! `cargo run -p velox-tuning --example tune -- [check|plan N|apply [STAGE]] [--net-cores 0,1]`.

use velox_tuning::{parse_cpulist, plan, run_apply_with, run_check, RealFs, Topology};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let net_cores = args
        .iter()
        .position(|a| a == "--net-cores")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| parse_cpulist(s))
        .unwrap_or_default();
    let fs = RealFs::new();
    match args.first().map(String::as_str).unwrap_or("check") {
        "plan" => {
            let cores = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
            match plan(&Topology::detect(&fs), cores) {
                Ok(p) => {
                    print!("{}", p.to_toml());
                    for line in &p.explanation {
                        println!("# {line}");
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            }
        }
        "apply" => {
            let stage = args.get(1).filter(|s| !s.starts_with("--"));
            let r = run_apply_with(&fs, stage.map(String::as_str), &net_cores);
            print!("{}", r.render());
            std::process::exit(i32::from(r.failed()));
        }
        _ => {
            let r = run_check(&fs, &net_cores);
            print!("{}", r.render_table());
            std::process::exit(i32::from(r.required_failed()));
        }
    }
}
