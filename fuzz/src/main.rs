//! `crowdpulse-fuzz [--seconds N] [--seed S] [TARGET...]`: runs each target for N seconds and
//! reports executions and findings; findings are written to `target/fuzz-findings/` and make the
//! exit status 1.

use std::time::Duration;

use crowdpulse_fuzz::{run, targets};

fn main() {
    let mut seconds = 60u64;
    let mut seed = 0x5eed_u64;
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--seconds" => seconds = value("--seconds"),
            "--seed" => seed = value("--seed"),
            name => chosen.push(name.to_owned()),
        }
    }
    let out = std::path::Path::new("target/fuzz-findings");
    let targets = targets();
    if let Some(unknown) = chosen
        .iter()
        .find(|c| !targets.iter().any(|t| t.name == c.as_str()))
    {
        let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
        eprintln!("unknown target {unknown}; targets: {}", names.join(", "));
        std::process::exit(2);
    }
    println!("seed {seed}");
    let mut found = 0;
    for target in targets {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == target.name) {
            continue;
        }
        let report = run(&target, Duration::from_secs(seconds), seed);
        println!(
            "{:<12} {:>10} executions in {seconds} s ({:.0}/s), {} findings",
            target.name,
            report.executions,
            report.executions as f64 / seconds.max(1) as f64,
            report.findings.len()
        );
        for (index, (input, what)) in report.findings.iter().enumerate() {
            std::fs::create_dir_all(out).expect("findings directory");
            let path = out.join(format!("{}-{seed}-{index}.bin", target.name));
            std::fs::write(&path, input).expect("finding written");
            println!("  {}: {what}", path.display());
            found += 1;
        }
    }
    std::process::exit(i32::from(found > 0));
}
