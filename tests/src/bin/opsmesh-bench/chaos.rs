//! `chaos`: the chaos suite's harness at benchmark size.

use std::time::Duration;

use crate::{arg, num, usage};

/// The chaos suite's harness at benchmark size (tansu starts itself; `OPSMESH_TANSU` names
/// the binary). Prints the run's timeline and counts.
pub async fn chaos(args: &[String]) {
    use opsmesh_tests::chaos::{Plan, run};
    let plan = Plan {
        seed: arg(args, "--seed")
            .map(|s| s.parse().unwrap_or_else(|_| usage()))
            .unwrap_or_else(Plan::seed_from_env),
        alerts: num(args, "--alerts", 10_000),
        models: num(args, "--models", 100),
        senders: num(args, "--senders", 32),
        storm: Duration::from_secs(num(args, "--storm", 120)),
        faults: !args.iter().any(|a| a == "--no-faults"),
        hec_outage: Duration::from_secs(num(args, "--hec-outage", 60)),
        settle: Duration::from_secs(600),
    };
    let outcome = run(&plan).await;
    outcome.print();
    let accepted = outcome.accepted.len() as f64;
    if let Some(settled) = outcome.settled_after {
        println!(
            "{} alerts accepted over {:.1}s ({:.0}/s); all in HEC and every incident decided {:.1}s after the first",
            outcome.accepted.len(),
            outcome.storm_took.as_secs_f64(),
            accepted / outcome.storm_took.as_secs_f64(),
            settled.as_secs_f64()
        );
    }
    println!(
        "lost {}, duplicate alert events {}, models not changed exactly once {}, undecided incidents {}, audit {}",
        outcome.lost.len(),
        outcome.duplicate_alert_events,
        outcome.not_changed_once().len(),
        outcome.undecided().len(),
        if outcome.audit_ok { "OK" } else { "FAILED" }
    );
}
