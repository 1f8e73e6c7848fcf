//! Remediation ladders: what the remediator tries next, step by step, when a section's
//! actions do not verify healthy (`sections[].ladder` in the front matter).

use serde::Deserialize;

use opsmesh_proto::ActionKind;

use crate::{SectionSpec, Verification};

/// Highest `ladder.max_steps` a runbook may declare (and highest `repeat` of a step).
pub const MAX_LADDER_STEPS: u32 = 10;

/// A remediation ladder: step 1 is the section's actions as the diagnosis proposed them; when
/// a step's verification fails without making things worse, the next step runs, up to
/// `max_steps` steps in all. Every step's kind must be among the section's `actions` (the
/// allow-list stays the one place that says what may run).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    /// Steps in all, the first included (2..=[`MAX_LADDER_STEPS`]).
    pub max_steps: u32,
    /// The steps after the first, in order; each may run `repeat` times in a row.
    pub steps: Vec<LadderStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderStep {
    pub kind: ActionKind,
    pub target: String,
    /// `patch_memory_limit` only (and required there): the next limit is the current limit
    /// times this factor (above 1, at most 10), rounded up to 64Mi, capped at the ceiling.
    #[serde(default)]
    pub step_factor: Option<f64>,
    /// How many times in a row this step may run (1..=[`MAX_LADDER_STEPS`]).
    #[serde(default = "one")]
    pub repeat: u32,
    /// Plain-language preconditions of the step, recorded with it.
    pub guards: Vec<String>,
    pub verification: Verification,
}

fn one() -> u32 {
    1
}

impl Ladder {
    /// The step entry that runs as step `number` (2 is the first after the section's actions),
    /// repeats unrolled; `None` past `max_steps` or past the declared steps.
    pub fn step(&self, number: u32) -> Option<&LadderStep> {
        if number < 2 || number > self.max_steps {
            return None;
        }
        let mut remaining = number - 2;
        for step in &self.steps {
            if remaining < step.repeat {
                return Some(step);
            }
            remaining -= step.repeat;
        }
        None
    }

    /// Checks what the schema cannot: bounds, and every step allowed by the section.
    pub(crate) fn validate(&self, section: &SectionSpec) -> Result<(), String> {
        if !(2..=MAX_LADDER_STEPS).contains(&self.max_steps) {
            return Err(format!(
                "ladder.max_steps must be 2..={MAX_LADDER_STEPS} (the first step included), got {}",
                self.max_steps
            ));
        }
        if self.steps.is_empty() {
            return Err("ladder.steps must list at least one step".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("ladder.steps[{i}]");
            if step.kind == ActionKind::Escalate {
                return Err(format!(
                    "{field}.kind: escalate ends every ladder on its own; it is not a step"
                ));
            }
            if !section
                .actions
                .iter()
                .any(|a| a.kind == step.kind && a.target == step.target)
            {
                return Err(format!(
                    "{field}.kind: {} on a {} is not among the section's actions",
                    step.kind, step.target
                ));
            }
            if !(1..=MAX_LADDER_STEPS).contains(&step.repeat) {
                return Err(format!(
                    "{field}.repeat must be 1..={MAX_LADDER_STEPS}, got {}",
                    step.repeat
                ));
            }
            match (step.kind, step.step_factor) {
                (ActionKind::PatchMemoryLimit, None) => {
                    return Err(format!(
                        "{field}.step_factor is required for patch_memory_limit"
                    ));
                }
                (ActionKind::PatchMemoryLimit, Some(f)) if !(f > 1.0 && f <= 10.0) => {
                    return Err(format!(
                        "{field}.step_factor must be above 1 and at most 10, got {f}"
                    ));
                }
                (ActionKind::PatchMemoryLimit, Some(_)) | (_, None) => {}
                (kind, Some(_)) => {
                    return Err(format!(
                        "{field}.step_factor applies to patch_memory_limit only, not {kind}"
                    ));
                }
            }
            if step.guards.is_empty() {
                return Err(format!("{field}.guards must list at least one guard"));
            }
            if !(1..=100).contains(&step.verification.attempts) {
                return Err(format!(
                    "{field}.verification.attempts must be 1..=100, got {}",
                    step.verification.attempts
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{Library, Runbook};

    use super::*;

    /// A runbook whose memory section declares `ladder` (YAML, indented for `sections[0]`).
    fn with_ladder(ladder: &str) -> Result<Runbook, String> {
        let text = format!(
            "---\nid: demo\nversion: 1.0.0\ntitle: Demo\nroot_causes: [oom_killed]\nsections:\n  - heading: Raise\n    actions:\n      - kind: patch_memory_limit\n        target: inferenceservice\n      - kind: rollback_image\n        target: inferenceservice\n    ladder:\n{ladder}---\n## Raise\nraise it\n"
        );
        Runbook::parse(Path::new("demo.md"), &text).map_err(|e| e.to_string())
    }

    const STEP: &str = "        guards: [\"the previous step did not make things worse\"]\n        verification: {check: Ready, attempts: 5, interval: 30s}\n";

    #[test]
    fn a_ladder_unrolls_its_repeats_up_to_max_steps() {
        let runbook = with_ladder(&format!(
            "      max_steps: 4\n      steps:\n      - kind: patch_memory_limit\n        target: inferenceservice\n        step_factor: 1.5\n        repeat: 2\n{STEP}      - kind: rollback_image\n        target: inferenceservice\n{STEP}"
        ))
        .unwrap();
        let ladder = runbook.front.sections[0].ladder.as_ref().unwrap();
        let kinds: Vec<Option<ActionKind>> =
            (1..=5).map(|n| ladder.step(n).map(|s| s.kind)).collect();
        assert_eq!(
            kinds,
            [
                None,
                Some(ActionKind::PatchMemoryLimit),
                Some(ActionKind::PatchMemoryLimit),
                Some(ActionKind::RollbackImage),
                None
            ],
            "step 1 is the section's own actions; nothing after max_steps"
        );
        assert_eq!(ladder.step(2).unwrap().step_factor, Some(1.5));
    }

    #[test]
    fn a_bad_ladder_is_an_error_naming_the_field() {
        let patch = "      - kind: patch_memory_limit\n        target: inferenceservice\n";
        for (ladder, field) in [
            (
                format!("      max_steps: 1\n      steps:\n{patch}        step_factor: 2\n{STEP}"),
                "ladder.max_steps",
            ),
            (
                format!("      max_steps: 11\n      steps:\n{patch}        step_factor: 2\n{STEP}"),
                "ladder.max_steps",
            ),
            (
                "      max_steps: 3\n      steps: []\n".to_owned(),
                "ladder.steps",
            ),
            (
                format!("      max_steps: 3\n      steps:\n{patch}{STEP}"),
                "ladder.steps[0].step_factor is required",
            ),
            (
                format!("      max_steps: 3\n      steps:\n{patch}        step_factor: 1\n{STEP}"),
                "ladder.steps[0].step_factor must be above 1",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n      - kind: rollback_image\n        target: inferenceservice\n        step_factor: 2\n{STEP}"
                ),
                "ladder.steps[0].step_factor applies to patch_memory_limit only",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n      - kind: restart_inference_service\n        target: inferenceservice\n{STEP}"
                ),
                "ladder.steps[0].kind: restart_inference_service on a inferenceservice is not among the section's actions",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n      - kind: escalate\n        target: inferenceservice\n{STEP}"
                ),
                "ladder.steps[0].kind: escalate",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n{patch}        step_factor: 2\n        repeat: 0\n{STEP}"
                ),
                "ladder.steps[0].repeat",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n{patch}        step_factor: 2\n        guards: []\n        verification: {{check: Ready, attempts: 5, interval: 30s}}\n"
                ),
                "ladder.steps[0].guards",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n{patch}        step_factor: 2\n        guards: [g]\n        verification: {{check: Ready, attempts: 0, interval: 30s}}\n"
                ),
                "ladder.steps[0].verification.attempts",
            ),
            (
                format!(
                    "      max_steps: 3\n      stairs: []\n      steps:\n{patch}        step_factor: 2\n{STEP}"
                ),
                "stairs",
            ),
            (
                format!(
                    "      max_steps: 3\n      steps:\n{patch}        step_factor: 2\n        guards: [g]\n"
                ),
                "verification",
            ),
        ] {
            let err = with_ladder(&ladder).expect_err(field);
            assert!(err.contains(field), "{field}: {err}");
            assert!(err.starts_with("demo.md: "), "names the file: {err}");
        }
    }

    #[test]
    fn the_repository_ladders_are_the_documented_ones() {
        let library = Library::built_in().unwrap();
        let ladder = |id: &str| {
            let runbook = library
                .runbooks()
                .iter()
                .find(|r| r.front.id == id)
                .unwrap();
            runbook.front.sections[0].ladder.clone().expect("a ladder")
        };
        let oom = ladder("oom-killed");
        assert_eq!(oom.step(2).unwrap().kind, ActionKind::PatchMemoryLimit);
        assert!(
            oom.step(oom.max_steps).is_some(),
            "the raise repeats up to max_steps"
        );
        let crash = ladder("crash-loop");
        assert_eq!(crash.max_steps, 2);
        assert_eq!(crash.step(2).unwrap().kind, ActionKind::RollbackImage);
    }
}
