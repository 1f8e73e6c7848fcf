//! The incident lifecycle over random histories of alerts, clears and remediator outcomes:
//! the decisions hold, and reading the published records back rebuilds the same state.

use proptest::prelude::*;
use strum::VariantArray;

use super::*;

/// One step of a random history: an alert of one of two fingerprints, a sender's clear,
/// or a remediator state for whatever is open, some seconds to minutes later.
#[derive(Debug, Clone)]
enum Step {
    Fire(usize),
    Clear(usize),
    Outcome(usize, IncidentState),
}

fn step() -> impl Strategy<Value = (Step, i64)> {
    let step = prop_oneof![
        6 => (0..2usize).prop_map(Step::Fire),
        1 => (0..2usize).prop_map(Step::Clear),
        2 => ((0..2usize), proptest::sample::select(IncidentState::VARIANTS))
            .prop_map(|(f, s)| Step::Outcome(f, s)),
    ];
    (step, 1..3600i64)
}

proptest! {
    #[test]
    fn the_lifecycle_holds_over_any_history(steps in proptest::collection::vec(step(), 1..80)) {
        let live = incidents();
        let fingerprints = ["fp-a", "fp-b"];
        let mut now = t0();
        // What the state must say, tracked independently: per fingerprint the current
        // incident and the ids seen.
        let mut ids: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
        let mut published: Vec<IncidentRecord> = Vec::new();
        for (step, seconds) in steps {
            now += chrono::Duration::seconds(seconds);
            match step {
                Step::Fire(f) => {
                    let before = live.state().by_fingerprint.get(fingerprints[f]).cloned();
                    // Different names: no related-target attaching across fingerprints.
                    let decision = decide(&live, &alert(fingerprints[f], fingerprints[f]), now);
                    match (&before, &decision) {
                        (None, Decision::Open(r)) => {
                            prop_assert_eq!(r.generation, 1);
                            prop_assert_eq!(&r.recurrence_of, &None);
                        }
                        (Some(b), Decision::Attach(r)) => {
                            let quiet = b.closed_at.is_some_and(|c| now - c < minutes(30));
                            prop_assert!(b.status.is_open() || quiet, "absorbed after the quiet period: {b:?}");
                            prop_assert_eq!(&r.incident_id, &b.incident_id);
                            prop_assert_eq!(r.status, b.status);
                            prop_assert_eq!(r.alert_count, b.alert_count + 1);
                        }
                        (Some(b), Decision::Open(r)) => {
                            prop_assert!(!b.status.is_open(), "a second incident while one is open");
                            prop_assert!(now - b.closed_at.unwrap() >= minutes(30));
                            prop_assert_eq!(r.generation, b.generation + 1);
                            prop_assert_eq!(r.recurrence_of.as_ref(), Some(&b.incident_id));
                            prop_assert_eq!(r.previous_outcome, Some(b.status));
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                    if let Decision::Open(r) = &decision {
                        prop_assert!(!ids[f].contains(&r.incident_id), "id reused");
                        ids[f].push(r.incident_id.clone());
                    }
                    if let Decision::Open(r) | Decision::Attach(r) = decision {
                        published.push(r);
                    }
                }
                Step::Clear(f) => {
                    let before = live.state().by_fingerprint.get(fingerprints[f]).cloned();
                    let decision = decide(&live, &cleared(fingerprints[f], fingerprints[f]), now);
                    match before {
                        Some(b) if b.status.is_open() => prop_assert!(
                            matches!(decision, Decision::Clear(ref r) if r.status == IncidentStatus::Cleared && r.incident_id == b.incident_id)
                        ),
                        _ => prop_assert_eq!(&decision, &Decision::Ignore),
                    }
                    if let Decision::Clear(r) = decision {
                        published.push(r);
                    }
                }
                Step::Outcome(f, outcome) => {
                    let Some(current) = live.state().by_fingerprint.get(fingerprints[f]).cloned() else {
                        continue;
                    };
                    let closed = live.close(&current.incident_id, outcome, now);
                    // An open incident closes; an escalated one ends again only with another
                    // outcome (the remediator took it up again).
                    let reopened_end = current.status == IncidentStatus::Escalated
                        && outcome != IncidentState::Escalated;
                    prop_assert_eq!(
                        closed.is_some(),
                        (current.status.is_open() || reopened_end) && outcome.is_terminal()
                    );
                    if let Some(r) = closed {
                        prop_assert_eq!(r.status.to_string(), outcome.to_string());
                        prop_assert!(r.closed_at.unwrap() >= r.last_alert_at);
                        live.apply(r.clone());
                        published.push(r);
                    }
                }
            }
            // Reading every record published so far back from the topic, in order,
            // rebuilds the same state.
            let restored = incidents();
            for r in &published {
                restored.restore(r.clone());
            }
            prop_assert_eq!(
                &restored.state().by_fingerprint,
                &live.state().by_fingerprint
            );
        }
    }
}
