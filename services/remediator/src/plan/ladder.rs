//! Remediation ladders (a runbook section's `ladder`): where an action stands in its ladder,
//! whether a step made things worse, and the next step's action, computed from the runbook
//! and from what the cluster shows now. Step 1 is the section's actions as the diagnosis
//! proposed them; the engine climbs only what the cited section declares.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind,
    diagnosis::ActionProposal,
    quantity::{format_bytes, json_quantity, parse_bytes},
    remediation::ActionRecord,
};
use opsmesh_runbooks::{Ladder, LadderStep, Library, SectionSpec};

use crate::{cluster::Observed, config::PolicyConfig, guards, policy};

use super::{allowed_by_section, idempotency_key};

/// The param recording an action's place in its ladder. Set by the remediator, never proposed.
pub const LADDER: &str = "ladder";
/// The param recording how many predictor containers were ready just before a step.
pub const READY_BEFORE: &str = "observed_ready_containers";
/// Raised limits are multiples of this (as the diagnoser's).
const MEMORY_STEP: u64 = 64 << 20;

/// An action's place in its ladder (the `ladder` param of its records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub runbook: String,
    pub version: String,
    pub section: String,
    /// 1 for the section's own actions, 2 for the first step after them, ...
    pub step: u32,
    pub max_steps: u32,
}

impl Rung {
    pub fn of(a: &ActionRecord) -> Option<Rung> {
        serde_json::from_value(a.params.get(LADDER)?.clone()).ok()
    }

    pub fn to_param(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The ladder step an action belongs to (1 when it is not on a ladder).
pub fn step_of(a: &ActionRecord) -> u32 {
    Rung::of(a).map_or(1, |r| r.step)
}

/// The idempotency key of an action at ladder step `step`: step 1 keeps the plain key, every
/// later step its own, so a step runs at most once and a repeated kind is still a new action.
pub fn step_key(incident: &str, kind: ActionKind, target: &str, step: u32) -> String {
    let key = idempotency_key(incident, kind, target);
    if step <= 1 {
        key
    } else {
        format!("{key}#{step}")
    }
}

/// The cited section and its ladder, if the loaded runbook is still the version `rung` climbs.
pub fn ladder_of<'a>(
    library: &'a Library,
    rung: &Rung,
) -> Result<(&'a SectionSpec, &'a Ladder), String> {
    let runbook = library
        .runbooks()
        .iter()
        .find(|r| r.front.id == rung.runbook)
        .ok_or_else(|| format!("runbook {} is no longer loaded", rung.runbook))?;
    if runbook.front.version != rung.version {
        return Err(format!(
            "runbook {} changed from v{} to v{} during the incident",
            rung.runbook, rung.version, runbook.front.version
        ));
    }
    runbook
        .front
        .sections
        .iter()
        .find(|s| s.heading == rung.section)
        .and_then(|s| Some((s, s.ladder.as_ref()?)))
        .ok_or_else(|| {
            format!(
                "runbook {} section {:?} declares no ladder",
                rung.runbook, rung.section
            )
        })
}

/// How a step made things worse, measurably: fewer ready predictor containers after it than
/// just before it. Unknown counts never count as worse.
pub fn made_worse(before: Option<u64>, after: Option<u64>) -> Option<String> {
    match (before, after) {
        (Some(b), Some(a)) if a < b => Some(format!(
            "{a} predictor container(s) ready after it, {b} before"
        )),
        _ => None,
    }
}

/// What follows a step whose verification failed without making things worse.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The next step's action (params from the cluster's `observed_*` values merged in later).
    Run(ActionRecord),
    /// The ladder ends here, and why.
    End(String),
}

/// The step after `current` (an action of the step that just failed), from its ladder and
/// what the cluster showed just now (`observed`, as [`Cluster::observe`] reads it).
///
/// [`Cluster::observe`]: crate::cluster::Cluster::observe
pub fn next_step(
    incident: &str,
    library: &Library,
    current: &ActionRecord,
    observed: &Observed,
    policy: &PolicyConfig,
) -> Next {
    let Some(rung) = Rung::of(current) else {
        return Next::End(format!("{} is not on a ladder", current.kind));
    };
    let (section, ladder) = match ladder_of(library, &rung) {
        Ok(found) => found,
        Err(e) => return Next::End(e),
    };
    let number = rung.step + 1;
    let Some(step) = ladder.step(number) else {
        return Next::End(format!(
            "the ladder is exhausted after {} step(s) (max_steps {})",
            rung.step, ladder.max_steps
        ));
    };
    let (mode, _) = policy::mode_for(step.kind, policy);
    if mode != opsmesh_proto::remediation::ActionMode::Auto {
        return Next::End(format!(
            "step {number} ({}) would need a human's approval (mode {})",
            step.kind,
            super::mode_name(mode)
        ));
    }
    let params = match step_params(step, section, observed, policy) {
        Ok(p) => p,
        Err(e) => return Next::End(format!("step {number} ({}): {e}", step.kind)),
    };
    let mut record = ActionRecord {
        kind: step.kind,
        target: current.target.clone(),
        params,
        idempotency_key: step_key(incident, step.kind, &current.target, number),
        mode,
        approved_by: None,
    };
    if let Err(e) = within_section(&record, section) {
        return Next::End(format!("step {number} ({}): {e}", step.kind));
    }
    record.params.insert(
        LADDER.into(),
        Rung {
            step: number,
            ..rung
        }
        .to_param(),
    );
    Next::Run(record)
}

/// The step's params, derived as its runbook entry says from what the cluster shows now.
fn step_params(
    step: &LadderStep,
    section: &SectionSpec,
    observed: &Observed,
    policy: &PolicyConfig,
) -> Result<Observed, String> {
    let text = |name: &str| observed.get(name).and_then(Value::as_str);
    Ok(match step.kind {
        ActionKind::PatchMemoryLimit => {
            let current_text = text("observed_memory_limit")
                .ok_or("the InferenceService sets no memory limit now")?;
            let current = parse_bytes(current_text)
                .map_err(|e| format!("the current limit {current_text:?}: {e}"))?;
            let factor = step.step_factor.ok_or("no step_factor")?;
            let wanted = (current as f64 * factor) as u64;
            let ceiling = memory_cap(section, policy);
            let new = wanted
                .div_ceil(MEMORY_STEP)
                .saturating_mul(MEMORY_STEP)
                .min(ceiling);
            if new <= current {
                return Err(format!(
                    "the memory limit {current_text} cannot be raised: × {factor} is {}, above the ceiling {} (policy memory_ceiling {}, runbook max)",
                    format_bytes(wanted.div_ceil(MEMORY_STEP) * MEMORY_STEP),
                    format_bytes(ceiling),
                    policy.memory_ceiling
                ));
            }
            [
                ("memory_limit".to_owned(), json!(format_bytes(new))),
                ("previous_memory_limit".to_owned(), json!(current_text)),
            ]
            .into()
        }
        ActionKind::RollbackImage => {
            let good = text("observed_last_known_good_image")
                .ok_or("no last known good image is known for the InferenceService")?;
            let running = text("observed_image").unwrap_or_default();
            if good == running {
                return Err(format!("it already runs its last known good image {good}"));
            }
            [
                ("image".to_owned(), json!(good)),
                ("failing_image".to_owned(), json!(running)),
            ]
            .into()
        }
        ActionKind::RestartInferenceService | ActionKind::ArgocdSync => Default::default(),
        other => {
            return Err(format!(
                "the remediator cannot derive the params of {other} for a ladder step"
            ));
        }
    })
}

/// The highest limit a step may set: the policy's ceiling and the runbook's `max`, the lower.
fn memory_cap(section: &SectionSpec, policy: &PolicyConfig) -> u64 {
    let policy_ceiling = parse_bytes(&policy.memory_ceiling).unwrap_or(u64::MAX);
    let runbook_max = section
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::PatchMemoryLimit)
        .filter_map(|a| a.params.get("memory_limit")?.max.as_ref())
        .filter_map(|m| json_quantity(&serde_json::to_value(m).ok()?))
        .map(|bytes| bytes as u64)
        .min()
        .unwrap_or(u64::MAX);
    policy_ceiling.min(runbook_max)
}

/// The section lists the step's kind and target kind, its params are within the section's
/// bounds, and every check it names is one the remediator implements.
fn within_section(record: &ActionRecord, section: &SectionSpec) -> Result<(), String> {
    let proposal = ActionProposal {
        kind: record.kind,
        target: record.target.clone(),
        params: record.params.clone(),
        evidence_ids: Vec::new(),
        rationale: String::new(),
    };
    let target = record
        .target
        .parse::<opsmesh_proto::Target>()
        .map_err(|e| e.to_string())?;
    let spec = allowed_by_section(&proposal, &target, section)?;
    guards::known_checks(record.kind, spec).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
