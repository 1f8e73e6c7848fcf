use std::collections::BTreeMap;

use chrono::Utc;
use opsmesh_proto::{Target, remediation::ActionMode};
use serde_json::json;

use super::*;
use crate::policy::{History, allows};

const ISVC: &str = "inferenceservice/ml/llama";

fn policy() -> PolicyConfig {
    PolicyConfig {
        allowed_namespaces: vec!["ml".into()],
        ..PolicyConfig::default()
    }
}

fn library() -> Library {
    Library::built_in().expect("built-in runbooks")
}

/// The first (or `step`th) action of `runbook`'s first section's ladder, as the plan records it.
fn on_ladder(library: &Library, runbook: &str, kind: ActionKind, step: u32) -> ActionRecord {
    let book = library
        .runbooks()
        .iter()
        .find(|r| r.front.id == runbook)
        .unwrap();
    let section = &book.front.sections[0];
    let rung = Rung {
        runbook: runbook.into(),
        version: book.front.version.clone(),
        section: section.heading.clone(),
        step,
        max_steps: section.ladder.as_ref().unwrap().max_steps,
    };
    ActionRecord {
        kind,
        target: ISVC.into(),
        params: [(LADDER.to_owned(), rung.to_param())].into(),
        idempotency_key: step_key("inc", kind, ISVC, step),
        mode: ActionMode::Auto,
        approved_by: None,
    }
}

fn observed(values: Value) -> Observed {
    values
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect::<BTreeMap<_, _>>()
}

/// The step after `current` when the cluster shows `seen`.
fn after(current: &ActionRecord, seen: Value, policy: &PolicyConfig) -> Next {
    next_step("inc", &library(), current, &observed(seen), policy)
}

fn run(next: Next) -> ActionRecord {
    match next {
        Next::Run(record) => record,
        Next::End(why) => panic!("expected a next step, the ladder ended: {why}"),
    }
}

fn end(next: Next) -> String {
    match next {
        Next::End(why) => why,
        Next::Run(record) => panic!("expected the ladder to end, got {record:?}"),
    }
}

#[test]
fn every_step_has_its_own_key_and_the_first_keeps_the_plain_one() {
    let kind = ActionKind::PatchMemoryLimit;
    assert_eq!(
        step_key("inc", kind, ISVC, 1),
        idempotency_key("inc", kind, ISVC)
    );
    assert_eq!(
        step_key("inc", kind, ISVC, 3),
        "inc:patch_memory_limit:inferenceservice/ml/llama#3"
    );
}

#[test]
fn worse_means_fewer_ready_containers_than_before_the_step() {
    assert_eq!(
        made_worse(Some(2), Some(1)).as_deref(),
        Some("1 predictor container(s) ready after it, 2 before")
    );
    assert_eq!(
        made_worse(Some(0), Some(0)),
        None,
        "still failing is not worse"
    );
    assert_eq!(made_worse(Some(1), Some(2)), None);
    assert_eq!(made_worse(None, Some(0)), None, "no baseline: not worse");
    assert_eq!(made_worse(Some(2), None), None);
}

#[test]
fn an_oom_step_raises_the_current_limit_by_the_step_factor() {
    let library = library();
    let current = on_ladder(&library, "oom-killed", ActionKind::PatchMemoryLimit, 1);
    let next = run(after(
        &current,
        json!({"observed_memory_limit": "512Mi"}),
        &policy(),
    ));
    assert_eq!(next.kind, ActionKind::PatchMemoryLimit);
    assert_eq!(next.target, ISVC);
    assert_eq!(next.params["memory_limit"], json!("768Mi"));
    assert_eq!(next.params["previous_memory_limit"], json!("512Mi"));
    assert_eq!(
        next.idempotency_key,
        format!("inc:patch_memory_limit:{ISVC}#2")
    );
    assert_eq!(Rung::of(&next).unwrap().step, 2);
    // 700Mi × 1.5 = 1050Mi, rounded up to a multiple of 64Mi.
    let next = run(after(
        &current,
        json!({"observed_memory_limit": "700Mi"}),
        &policy(),
    ));
    assert_eq!(next.params["memory_limit"], json!("1088Mi"));
}

#[test]
fn an_oom_step_stops_at_the_ceiling_and_ends_the_ladder_there() {
    let library = library();
    let current = on_ladder(&library, "oom-killed", ActionKind::PatchMemoryLimit, 2);
    let ceiling = PolicyConfig {
        memory_ceiling: "1Gi".into(),
        ..policy()
    };
    let capped = run(after(
        &current,
        json!({"observed_memory_limit": "800Mi"}),
        &ceiling,
    ));
    assert_eq!(
        capped.params["memory_limit"],
        json!("1Gi"),
        "never above the ceiling"
    );
    let at_ceiling = end(after(
        &current,
        json!({"observed_memory_limit": "1Gi"}),
        &ceiling,
    ));
    assert_eq!(
        at_ceiling,
        "step 3 (patch_memory_limit): the memory limit 1Gi cannot be raised: × 1.5 is 1536Mi, above the ceiling 1Gi (policy memory_ceiling 1Gi, runbook max)"
    );
    // The runbook's own max (16Gi) binds when the policy allows more.
    let generous = PolicyConfig {
        memory_ceiling: "64Gi".into(),
        ..policy()
    };
    let next = run(after(
        &current,
        json!({"observed_memory_limit": "12Gi"}),
        &generous,
    ));
    assert_eq!(next.params["memory_limit"], json!("16Gi"));
}

#[test]
fn the_ladder_ends_after_max_steps() {
    let library = library();
    let last = on_ladder(&library, "oom-killed", ActionKind::PatchMemoryLimit, 4);
    let why = end(after(
        &last,
        json!({"observed_memory_limit": "512Mi"}),
        &policy(),
    ));
    assert_eq!(why, "the ladder is exhausted after 4 step(s) (max_steps 4)");
}

#[test]
fn a_persistent_crash_loop_rolls_back_to_the_last_good_image_when_one_is_known() {
    let library = library();
    let restart = on_ladder(
        &library,
        "crash-loop",
        ActionKind::RestartInferenceService,
        1,
    );
    let next = run(after(
        &restart,
        json!({"observed_image": "r/m:2", "observed_last_known_good_image": "r/m:1"}),
        &policy(),
    ));
    assert_eq!(next.kind, ActionKind::RollbackImage);
    assert_eq!(next.params["image"], json!("r/m:1"));
    assert_eq!(next.params["failing_image"], json!("r/m:2"));
    assert_eq!(
        end(after(
            &restart,
            json!({"observed_image": "r/m:2"}),
            &policy()
        )),
        "step 2 (rollback_image): no last known good image is known for the InferenceService"
    );
    assert!(
        end(after(
            &restart,
            json!({"observed_image": "r/m:1", "observed_last_known_good_image": "r/m:1"}),
            &policy(),
        ))
        .contains("already runs its last known good image r/m:1")
    );
    let rollback = on_ladder(&library, "crash-loop", ActionKind::RollbackImage, 2);
    assert!(
        end(after(&rollback, json!({}), &policy()))
            .starts_with("the ladder is exhausted after 2 step(s)")
    );
}

#[test]
fn the_ladder_follows_only_the_runbook_version_it_started_with_and_never_asks_for_approval() {
    let library = library();
    let mut current = on_ladder(&library, "oom-killed", ActionKind::PatchMemoryLimit, 1);
    let seen = || json!({"observed_memory_limit": "512Mi"});
    let approve = PolicyConfig {
        mode: ActionMode::Approve,
        ..policy()
    };
    assert_eq!(
        end(after(&current, seen(), &approve)),
        "step 2 (patch_memory_limit) would need a human's approval (mode approve)"
    );
    let mut rung = Rung::of(&current).unwrap();
    rung.version = "0.9.0".into();
    current.params.insert(LADDER.into(), rung.to_param());
    assert!(
        end(after(&current, seen(), &policy()))
            .starts_with("runbook oom-killed changed from v0.9.0 to v"),
    );
    current.params.remove(LADDER);
    assert_eq!(
        end(after(&current, seen(), &policy())),
        "patch_memory_limit is not on a ladder"
    );
}

#[test]
fn earlier_steps_count_against_the_rate_limit_but_not_the_cooldown() {
    let target: Target = ISVC.parse().unwrap();
    let limited = PolicyConfig {
        rate_limit: crate::config::RateLimitConfig {
            per_namespace: 2,
            ..Default::default()
        },
        ..policy()
    };
    let now = Utc::now();
    let own = |n: usize| History {
        own: vec![(now, ISVC.to_owned()); n],
        ..History::default()
    };
    assert_eq!(
        allows(ISVC, &target, &limited, &own(1), now),
        Ok(()),
        "no cooldown on its own steps"
    );
    let refused = allows(ISVC, &target, &limited, &own(2), now).unwrap_err();
    assert_eq!(refused.code, "rate_limit_namespace");
}
