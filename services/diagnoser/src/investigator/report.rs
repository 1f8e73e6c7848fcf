//! The report the model ends with, and its validation: like the advisor's output, nothing the
//! model says is kept unless it cites evidence that exists. Findings and proposals citing an
//! unknown evidence id, proposals outside the runbooks of the root cause, and proposals on a
//! target no tool result showed (or outside the allowed namespaces) are discarded one by one,
//! each discard recorded with its reason.

use std::{collections::BTreeMap, str::FromStr};

use serde::Deserialize;
use serde_json::Value;

use opsmesh_proto::{
    ActionKind, RootCause, Severity, Target,
    diagnosis::ActionProposal,
    investigation::{Finding, ToolEvidence},
    quantity::parse_bytes,
};
use opsmesh_runbooks::{ActionSpec, Library};

use crate::llm::invented_evidence;

/// Why part of a report was discarded (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Discard {
    /// Cites an evidence id no tool result has.
    UnknownEvidence,
    /// Cites no evidence at all.
    Uncited,
    /// A root cause or risk outside the vocabulary (replaced by `unknown` / none).
    OutsideVocabulary,
    /// An action the runbooks of the root cause do not allow.
    ActionOutsideRunbook,
    /// A target no tool result showed, of the wrong kind, or outside the allowed namespaces.
    InventedTarget,
    /// A parameter outside the `min`/`max` its runbook section gives.
    ParamOutOfRange,
}

/// The only shape accepted as a final answer; values are checked after parsing, so one bad
/// item costs that item, not the report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    summary: String,
    root_cause: String,
    #[serde(default)]
    risk: Option<String>,
    #[serde(default)]
    findings: Vec<Finding>,
    #[serde(default)]
    proposed_actions: Vec<RawProposal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProposal {
    kind: String,
    target: String,
    #[serde(default)]
    params: BTreeMap<String, Value>,
    #[serde(default)]
    evidence_ids: Vec<String>,
    #[serde(default)]
    rationale: String,
}

/// A report after validation.
#[derive(Debug)]
pub struct Validated {
    pub summary: String,
    pub root_cause: RootCause,
    pub risk: Option<Severity>,
    pub findings: Vec<Finding>,
    pub proposed_actions: Vec<ActionProposal>,
    pub discarded: Vec<(Discard, String)>,
}

/// What the report is checked against.
pub struct Checks<'a> {
    pub evidence: &'a [ToolEvidence],
    pub library: &'a Library,
    pub namespaces: &'a [String],
}

impl Checks<'_> {
    fn exists(&self, id: &str) -> bool {
        self.evidence.iter().any(|e| e.id == id)
    }

    /// Why the citations of an item do not hold, if they do not.
    fn citations(&self, cited: &[String]) -> Option<(Discard, String)> {
        if cited.is_empty() {
            return Some((Discard::Uncited, "cites no evidence".into()));
        }
        invented_evidence(cited, |id| self.exists(id)).map(|id| {
            (
                Discard::UnknownEvidence,
                format!("cites evidence {id} that does not exist"),
            )
        })
    }

    /// The runbook actions of `kind` for `root_cause`; empty when no runbook of that root
    /// cause allows it.
    fn allowed(&self, root_cause: RootCause, kind: ActionKind) -> Vec<&ActionSpec> {
        self.library
            .runbooks()
            .iter()
            .filter(|r| r.front.root_causes.contains(&root_cause))
            .flat_map(|r| &r.front.sections)
            .flat_map(|s| &s.actions)
            .filter(|a| a.kind == kind)
            .collect()
    }

    /// Whether some tool result showed this target.
    fn seen(&self, target: &Target) -> Result<(), String> {
        let (namespace, name) = match target {
            Target::InferenceService { namespace, name }
            | Target::Object {
                namespace, name, ..
            } => (Some(namespace.as_str()), name.as_str()),
            Target::Application { namespace, name } => (namespace.as_deref(), name.as_str()),
            Target::Namespace(namespace) => (Some(namespace.as_str()), namespace.as_str()),
            Target::Policy(name) => (None, name.as_str()),
        };
        if let Some(namespace) = namespace
            && !self.namespaces.iter().any(|n| n == namespace)
        {
            return Err(format!("namespace {namespace} is not an allowed namespace"));
        }
        let shown = self
            .evidence
            .iter()
            .any(|e| e.result.contains(name) && namespace.is_none_or(|ns| e.result.contains(ns)));
        if shown {
            Ok(())
        } else {
            Err(format!("no tool result shows {target}"))
        }
    }

    fn proposal(
        &self,
        root_cause: RootCause,
        raw: RawProposal,
    ) -> Result<ActionProposal, (Discard, String)> {
        let described = format!("proposal {} on {}", raw.kind, raw.target);
        let with = |(reason, why): (Discard, String)| (reason, format!("{described}: {why}"));
        if let Some(problem) = self.citations(&raw.evidence_ids) {
            return Err(with(problem));
        }
        let Ok(kind) = ActionKind::from_str(&raw.kind) else {
            return Err(with((
                Discard::ActionOutsideRunbook,
                "not an action of the runbook vocabulary".into(),
            )));
        };
        let specs = self.allowed(root_cause, kind);
        let targets: Vec<&str> = specs.iter().map(|a| a.target.as_str()).collect();
        if targets.is_empty() {
            return Err(with((
                Discard::ActionOutsideRunbook,
                format!("no runbook for root cause {root_cause} allows {kind}"),
            )));
        }
        let target = Target::from_str(&raw.target)
            .map_err(|e| with((Discard::InventedTarget, e.to_string())))?;
        if !targets.contains(&target.kind()) {
            return Err(with((
                Discard::InventedTarget,
                format!(
                    "{kind} acts on {}, not {}",
                    targets.join(" or "),
                    target.kind()
                ),
            )));
        }
        self.seen(&target)
            .map_err(|why| with((Discard::InventedTarget, why)))?;
        let spec = specs
            .iter()
            .find(|a| a.target == target.kind())
            .expect("a spec of this target kind, checked above");
        out_of_range(spec, &raw.params)
            .map_or(Ok(()), |why| Err(with((Discard::ParamOutOfRange, why))))?;
        Ok(ActionProposal {
            kind,
            target: target.to_string(),
            params: raw.params,
            evidence_ids: raw.evidence_ids,
            rationale: raw.rationale,
        })
    }
}

/// A comparable value: a number, or a Kubernetes quantity in bytes.
fn magnitude(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_bytes(s).ok().map(|b| b as f64),
        _ => None,
    }
}

/// Why a parameter falls outside its runbook bounds, if one does. Values the bounds cannot be
/// compared with are left to the remediator's plan, which checks every parameter.
fn out_of_range(spec: &ActionSpec, params: &BTreeMap<String, Value>) -> Option<String> {
    params.iter().find_map(|(name, value)| {
        let rule = spec.params.get(name)?;
        let given = magnitude(value)?;
        let bound = |b: &Option<_>| {
            b.as_ref()
                .and_then(|b| serde_json::to_value(b).ok())
                .and_then(|b| magnitude(&b).map(|m| (m, b)))
        };
        if let Some((min, shown)) = bound(&rule.min)
            && given < min
        {
            return Some(format!(
                "{name} {value} is below the runbook's minimum {shown}"
            ));
        }
        if let Some((max, shown)) = bound(&rule.max)
            && given > max
        {
            return Some(format!(
                "{name} {value} is above the runbook's maximum {shown}"
            ));
        }
        None
    })
}

/// Parses and validates the model's final answer; `Err` when it is not a report at all.
pub fn validate(content: &str, checks: &Checks<'_>) -> Result<Validated, String> {
    let json = content
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```");
    let raw: RawReport =
        serde_json::from_str(json).map_err(|e| format!("not the expected report JSON ({e})"))?;
    let mut discarded = Vec::new();
    let root_cause = match RootCause::from_str(&raw.root_cause) {
        Ok(cause) => cause,
        Err(_) => {
            discarded.push((
                Discard::OutsideVocabulary,
                format!(
                    "root cause {:?} is not in the vocabulary: unknown",
                    raw.root_cause
                ),
            ));
            RootCause::Unknown
        }
    };
    let mut validated = Validated {
        summary: raw.summary,
        root_cause,
        risk: None,
        findings: Vec::new(),
        proposed_actions: Vec::new(),
        discarded,
    };
    validated.risk = raw.risk.and_then(|risk| match Severity::from_str(&risk) {
        Ok(severity) => Some(severity),
        Err(_) => {
            validated.discarded.push((
                Discard::OutsideVocabulary,
                format!("risk {risk:?} is not a severity"),
            ));
            None
        }
    });
    for finding in raw.findings {
        match checks.citations(&finding.evidence_ids) {
            None => validated.findings.push(finding),
            Some((reason, why)) => validated
                .discarded
                .push((reason, format!("finding {:?}: {why}", finding.claim))),
        }
    }
    for proposal in raw.proposed_actions {
        match checks.proposal(root_cause, proposal) {
            Ok(kept) => validated.proposed_actions.push(kept),
            Err(discard) => validated.discarded.push(discard),
        }
    }
    Ok(validated)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn evidence() -> Vec<ToolEvidence> {
        vec![ToolEvidence {
            id: "t1".into(),
            tool: "container_states".into(),
            arguments: json!({"namespace": "ml-team-a"}),
            result: r#"{"namespace":"ml-team-a","pods":[{"pod":"gpt-oss-120b-predictor-0"}]} gpt-oss-120b"#.into(),
        }]
    }

    fn check(report: Value) -> Validated {
        let library = Library::built_in().unwrap();
        let evidence = evidence();
        let namespaces = vec!["ml-team-a".to_owned()];
        validate(
            &report.to_string(),
            &Checks {
                evidence: &evidence,
                library: &library,
                namespaces: &namespaces,
            },
        )
        .unwrap()
    }

    fn proposal(kind: &str, target: &str, cites: &[&str]) -> Value {
        json!({"kind": kind, "target": target, "evidence_ids": cites, "rationale": "r"})
    }

    #[test]
    fn every_kept_item_cites_real_evidence_within_the_runbook() {
        let report = check(json!({
            "summary": "s", "root_cause": "oom_killed", "risk": "high",
            "findings": [
                {"claim": "OOMKilled", "evidence_ids": ["t1"]},
                {"claim": "invented", "evidence_ids": ["t1", "t9"]},
                {"claim": "uncited", "evidence_ids": []},
            ],
            "proposed_actions": [
                proposal("patch_memory_limit", "inferenceservice/ml-team-a/gpt-oss-120b", &["t1"]),
                proposal("scale_inference_service", "inferenceservice/ml-team-a/gpt-oss-120b", &["t1"]),
                proposal("delete_everything", "inferenceservice/ml-team-a/gpt-oss-120b", &["t1"]),
                proposal("patch_memory_limit", "inferenceservice/ml-team-a/other-model", &["t1"]),
                proposal("patch_memory_limit", "inferenceservice/kube-system/gpt-oss-120b", &["t1"]),
                proposal("patch_memory_limit", "namespace/ml-team-a", &["t1"]),
                proposal("escalate", "inferenceservice/ml-team-a/gpt-oss-120b", &["t2"]),
                json!({"kind": "patch_memory_limit", "target": "inferenceservice/ml-team-a/gpt-oss-120b",
                       "params": {"memory_limit": "32Gi"}, "evidence_ids": ["t1"], "rationale": "r"}),
            ],
        }));
        assert_eq!(report.root_cause, RootCause::OomKilled);
        assert_eq!(report.risk, Some(Severity::High));
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.proposed_actions.len(), 1);
        assert_eq!(
            report.proposed_actions[0].kind,
            ActionKind::PatchMemoryLimit
        );
        let reasons: Vec<Discard> = report.discarded.iter().map(|d| d.0).collect();
        assert_eq!(
            reasons,
            [
                Discard::UnknownEvidence,
                Discard::Uncited,
                Discard::ActionOutsideRunbook,
                Discard::ActionOutsideRunbook,
                Discard::InventedTarget,
                Discard::InventedTarget,
                Discard::InventedTarget,
                Discard::UnknownEvidence,
                Discard::ParamOutOfRange,
            ],
            "{:#?}",
            report.discarded
        );
    }

    #[test]
    fn a_cause_outside_the_vocabulary_is_unknown() {
        let report = check(json!({"summary": "s", "root_cause": "cosmic_rays", "risk": "dire"}));
        assert_eq!(report.root_cause, RootCause::Unknown);
        assert_eq!(report.risk, None);
        assert_eq!(report.discarded.len(), 2);
    }
}
