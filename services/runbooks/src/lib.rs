//! Runbooks: Markdown files with YAML front matter naming their triggers and, per section,
//! the actions the automation may take. Retrieval runs on every incident: trigger match first,
//! then BM25 over the sections' text.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use bm25::{Document, Language, SearchEngine, SearchEngineBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use opsmesh_proto::{ActionKind, RootCause, diagnosis::RunbookRef};

mod ladder;
pub use ladder::{Ladder, LadderStep, MAX_LADDER_STEPS};

#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    #[error("reading runbooks from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("no runbooks found in {0}")]
    Empty(PathBuf),
}

/// The front matter, as documented in `runbooks/README.md` (unknown keys are errors).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontMatter {
    pub id: String,
    pub version: String,
    pub title: String,
    pub root_causes: Vec<RootCause>,
    #[serde(default)]
    pub alert_patterns: Vec<String>,
    pub sections: Vec<SectionSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionSpec {
    pub heading: String,
    pub actions: Vec<ActionSpec>,
    #[serde(default)]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub rollback: Option<String>,
    /// What the remediator tries next when the section's actions do not verify healthy.
    #[serde(default)]
    pub ladder: Option<Ladder>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub kind: ActionKind,
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, ParamRule>,
    #[serde(default)]
    pub guards: Vec<String>,
    /// Machine-checked guards, by code (`memory_not_lowered`, ...): the remediator refuses an
    /// action whose section names a check it does not implement for that action. Strings
    /// here, because this crate (and the diagnoser) does not know the remediator's guards.
    #[serde(default)]
    pub checks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamRule {
    pub rule: String,
    #[serde(default)]
    pub min: Option<serde_norway::Value>,
    #[serde(default)]
    pub max: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub check: String,
    pub attempts: u32,
    pub interval: String,
}

/// One `## ` section of a runbook body.
#[derive(Debug, Clone)]
pub struct Section {
    pub heading: String,
    pub text: String,
    /// What the automation may do here; empty for reading-only sections.
    pub spec: Option<SectionSpec>,
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub front: FrontMatter,
    pub path: PathBuf,
    pub sections: Vec<Section>,
}

impl Runbook {
    pub fn parse(path: &Path, text: &str) -> Result<Self, RunbookError> {
        let invalid = |problem: String| RunbookError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let rest = text
            .strip_prefix("---\n")
            .ok_or_else(|| invalid("must start with YAML front matter (---)".into()))?;
        let (yaml, body) = rest
            .split_once("\n---\n")
            .ok_or_else(|| invalid("front matter is not closed by ---".into()))?;
        let front: FrontMatter =
            serde_norway::from_str(yaml).map_err(|e| invalid(format!("front matter: {e}")))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if front.id != stem {
            return Err(invalid(format!(
                "id {:?} must equal the file name {stem:?}",
                front.id
            )));
        }
        let mut sections = split_sections(body);
        for spec in &front.sections {
            if let Some(ladder) = &spec.ladder {
                ladder
                    .validate(spec)
                    .map_err(|e| invalid(format!("section {:?}: {e}", spec.heading)))?;
            }
            let section = sections
                .iter_mut()
                .find(|s| s.heading == spec.heading)
                .ok_or_else(|| {
                    invalid(format!(
                        "section {:?} has no \"## {0}\" heading",
                        spec.heading
                    ))
                })?;
            section.spec = Some(spec.clone());
        }
        Ok(Self {
            front,
            path: path.to_owned(),
            sections,
        })
    }

    pub fn reference(&self, section: &Section) -> RunbookRef {
        RunbookRef {
            id: self.front.id.clone(),
            version: self.front.version.clone(),
            section: section.heading.clone(),
            content_hash: hex::encode(Sha256::digest(section.text.as_bytes())),
        }
    }

    fn matches_alert(&self, alert_name: &str) -> bool {
        let name = alert_name.to_lowercase();
        self.front
            .alert_patterns
            .iter()
            .any(|p| glob_match(&p.to_lowercase(), &name))
    }
}

fn split_sections(body: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for line in body.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            sections.push(Section {
                heading: heading.trim().to_owned(),
                text: String::new(),
                spec: None,
            });
        } else if let Some(section) = sections.last_mut() {
            section.text.push_str(line);
            section.text.push('\n');
        }
    }
    sections
}

/// `*` any run, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What retrieval found for an incident.
#[derive(Debug, Clone)]
pub struct Retrieved<'a> {
    pub runbook: &'a Runbook,
    pub section: &'a Section,
    /// How it was chosen, for the diagnosis' explanation.
    pub why: String,
}

mod built_in {
    include!(concat!(env!("OUT_DIR"), "/runbooks.rs"));
}

/// Every runbook, indexed for retrieval.
pub struct Library {
    runbooks: Vec<Runbook>,
    engine: SearchEngine<(usize, usize)>,
}

impl Library {
    pub fn load(dir: &Path) -> Result<Self, RunbookError> {
        let read = |e| RunbookError::Read {
            path: dir.to_owned(),
            source: e,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "md")
                    && p.file_name().is_some_and(|n| n != "README.md")
            })
            .collect();
        paths.sort();
        let runbooks = paths
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|e| RunbookError::Read {
                    path: path.clone(),
                    source: e,
                })?;
                Runbook::parse(path, &text)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if runbooks.is_empty() {
            return Err(RunbookError::Empty(dir.to_owned()));
        }
        Ok(Self::from_runbooks(runbooks))
    }

    /// The runbooks of the repository, built into the binary.
    pub fn built_in() -> Result<Self, RunbookError> {
        let runbooks = built_in::BUILT_IN
            .iter()
            .map(|(name, text)| Runbook::parse(Path::new(name), text))
            .collect::<Result<Vec<_>, _>>()?;
        if runbooks.is_empty() {
            return Err(RunbookError::Empty(PathBuf::from("<built-in>")));
        }
        Ok(Self::from_runbooks(runbooks))
    }

    pub fn from_runbooks(runbooks: Vec<Runbook>) -> Self {
        let documents: Vec<Document<(usize, usize)>> = runbooks
            .iter()
            .enumerate()
            .flat_map(|(r, runbook)| {
                runbook
                    .sections
                    .iter()
                    .enumerate()
                    .map(move |(s, section)| {
                        Document::new(
                            (r, s),
                            format!(
                                "{} {} {}",
                                runbook.front.title, section.heading, section.text
                            ),
                        )
                    })
            })
            .collect();
        let engine = SearchEngineBuilder::with_documents(Language::English, documents).build();
        Self { runbooks, engine }
    }

    pub fn runbooks(&self) -> &[Runbook] {
        &self.runbooks
    }

    /// The section to follow: among runbooks whose triggers match (root cause first, then
    /// alert name), the actionable section ranked highest by BM25 for `query` that allows
    /// `preferred` when given.
    pub fn retrieve(
        &self,
        root_cause: RootCause,
        alert_name: &str,
        query: &str,
        preferred: Option<ActionKind>,
    ) -> Option<Retrieved<'_>> {
        let by_cause: Vec<usize> = (0..self.runbooks.len())
            .filter(|&i| self.runbooks[i].front.root_causes.contains(&root_cause))
            .collect();
        let (candidates, trigger) = if by_cause.is_empty() && root_cause == RootCause::None {
            // Nothing is wrong: no runbook applies, and none is cited.
            return None;
        } else if by_cause.is_empty() {
            let by_alert: Vec<usize> = (0..self.runbooks.len())
                .filter(|&i| self.runbooks[i].matches_alert(alert_name))
                .collect();
            (
                by_alert,
                format!("alert name {alert_name:?} matched its alert_patterns"),
            )
        } else {
            (
                by_cause,
                format!("root cause {root_cause} is among its triggers"),
            )
        };
        let ranked = self.engine.search(query, 50);
        let score_of = |r: usize, s: usize| {
            ranked
                .iter()
                .find(|hit| hit.document.id == (r, s))
                .map_or(0.0, |hit| hit.score)
        };
        let allows = |section: &Section| match (preferred, &section.spec) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(kind), Some(spec)) => spec.actions.iter().any(|a| a.kind == kind),
        };
        let mut best: Option<(f32, usize, usize)> = None;
        for &r in &candidates {
            for (s, section) in self.runbooks[r].sections.iter().enumerate() {
                if !allows(section) {
                    continue;
                }
                let score = score_of(r, s);
                if best.is_none_or(|(b, _, _)| score > b) {
                    best = Some((score, r, s));
                }
            }
        }
        let (score, r, s) = best?;
        Some(Retrieved {
            runbook: &self.runbooks[r],
            section: &self.runbooks[r].sections[s],
            why: format!("{trigger}; section ranked {score:.2} by BM25 for {query:?}"),
        })
    }

    /// The runbook and section `reference` names, if loaded (whatever their version).
    pub fn find(&self, reference: &RunbookRef) -> Option<(&Runbook, &Section)> {
        let runbook = self.runbooks.iter().find(|r| r.front.id == reference.id)?;
        let section = runbook
            .sections
            .iter()
            .find(|s| s.heading == reference.section)?;
        Some((runbook, section))
    }

    /// Full-text search over every section (operators, the MCP `search_runbooks` tool).
    pub fn search(&self, query: &str, limit: usize) -> Vec<(RunbookRef, f32)> {
        self.engine
            .search(query, limit)
            .into_iter()
            .map(|hit| {
                let (r, s) = hit.document.id;
                let runbook = &self.runbooks[r];
                (runbook.reference(&runbook.sections[s]), hit.score)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_repository_runbook_parses() {
        let library = Library::built_in().expect("runbooks/*.md are valid");
        for runbook in library.runbooks() {
            assert!(
                runbook.sections.iter().any(|s| s.spec.is_some()),
                "{} has no actionable section",
                runbook.front.id
            );
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "kserve model error rate*",
            "kserve model error rate above 5%"
        ));
        assert!(glob_match("*oomkilled*", "pod oomkilled twice"));
        assert!(!glob_match("kyverno*", "kserve model"));
        assert!(glob_match("a?c", "abc"));
    }

    fn sample() -> Runbook {
        let text = "---\nid: demo\nversion: 1.0.0\ntitle: Demo\nroot_causes: [oom_killed]\nalert_patterns: [\"KServe*\"]\nsections:\n  - heading: Raise the memory limit\n    actions:\n      - kind: patch_memory_limit\n        target: inferenceservice\n---\n# Demo\n## Symptoms\npods OOMKilled\n## Raise the memory limit\nraise the memory limit above the peak\n";
        Runbook::parse(Path::new("runbooks/demo.md"), text).unwrap()
    }

    #[test]
    fn parses_sections_and_binds_specs() {
        let runbook = sample();
        assert_eq!(runbook.sections.len(), 2);
        assert!(runbook.sections[0].spec.is_none());
        assert_eq!(
            runbook.sections[1].spec.as_ref().unwrap().actions[0].kind,
            ActionKind::PatchMemoryLimit
        );
        let reference = runbook.reference(&runbook.sections[1]);
        assert_eq!(reference.content_hash.len(), 64);
    }

    #[test]
    fn a_spec_without_its_heading_is_an_error() {
        let text = "---\nid: demo\nversion: 1.0.0\ntitle: Demo\nroot_causes: [oom_killed]\nsections:\n  - heading: Missing\n    actions: []\n---\n## Other\n";
        let err = Runbook::parse(Path::new("demo.md"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Missing\""), "{err}");
    }

    #[test]
    fn unknown_front_matter_keys_are_errors() {
        let text = "---\nid: demo\nversion: 1.0.0\ntitle: Demo\nroot_causes: [oom_killed]\nsections: []\nsurprise: 1\n---\n";
        let err = Runbook::parse(Path::new("demo.md"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn retrieval_picks_the_actionable_section_by_cause_then_alert_name() {
        let library = Library::from_runbooks(vec![sample()]);
        let hit = library
            .retrieve(
                RootCause::OomKilled,
                "x",
                "memory limit OOMKilled",
                Some(ActionKind::PatchMemoryLimit),
            )
            .unwrap();
        assert_eq!(hit.section.heading, "Raise the memory limit");
        let by_alert = library.retrieve(
            RootCause::Unknown,
            "KServe model error rate",
            "memory",
            None,
        );
        assert!(by_alert.is_some(), "alert pattern matched");
        assert!(
            library
                .retrieve(RootCause::Unknown, "Kyverno", "memory", None)
                .is_none()
        );
    }
}
