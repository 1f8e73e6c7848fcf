//! The chaos suite: the five services as processes on tansu (SQLite), a storm of distinct
//! alerts, each service SIGKILLed once and restarted within a second, the broker restarted,
//! HEC answering 503 for a minute. Nothing accepted is lost, no model is changed twice, every
//! incident is decided and the audit ledger verifies. Seeded: a failure prints its seed,
//! `OPSMESH_CHAOS_SEED=<seed>` replays it.

use std::time::Duration;

use opsmesh_tests::chaos::{self, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mesh_survives_kills_a_broker_restart_and_a_hec_outage_under_an_alert_storm() {
    let plan = Plan {
        seed: Plan::seed_from_env(),
        alerts: 2_000,
        models: 20,
        senders: 16,
        storm: Duration::from_secs(60),
        faults: true,
        hec_outage: Duration::from_secs(60),
        settle: Duration::from_secs(300),
    };
    eprintln!(
        "chaos seed {} (replay: OPSMESH_CHAOS_SEED={})",
        plan.seed, plan.seed
    );
    let outcome = chaos::run(&plan).await;
    outcome.print();

    assert!(
        outcome.rejected.is_empty() && outcome.abandoned.is_empty(),
        "every alert is eventually accepted: rejected {:?}, abandoned {:?}",
        outcome.rejected.iter().take(3).collect::<Vec<_>>(),
        outcome.abandoned.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        outcome.accepted.len(),
        plan.alerts,
        "distinct alerts accepted"
    );
    assert!(
        outcome.lost.is_empty(),
        "{} accepted alerts never reached HEC, e.g. {:?}",
        outcome.lost.len(),
        outcome.lost.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        outcome.not_changed_once().is_empty(),
        "each model changed exactly once: {:?}",
        outcome.not_changed_once()
    );
    assert!(
        outcome.undecided().is_empty(),
        "every incident decided: {:?}",
        outcome.undecided()
    );
    let resolved = outcome
        .incidents
        .values()
        .filter(|s| s.as_deref() == Some("resolved"))
        .count();
    assert!(
        resolved >= plan.models,
        "every model's incident resolved ({resolved} resolved of {} incidents)",
        outcome.incidents.len()
    );
    assert!(outcome.audit_ok, "audit verify:\n{}", outcome.audit_output);
    assert!(outcome.settled_after.is_some(), "settled within the limit");
    // The logs stay for a failed run (its path is printed above).
    let _ = std::fs::remove_dir_all(&outcome.logs);
}
