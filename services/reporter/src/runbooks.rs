//! The runbooks built into the binary (the repository's `runbooks/`), for showing the section a
//! decision followed and for the MCP `search_runbooks` tool.

use std::sync::OnceLock;

use serde::Serialize;

use opsmesh_proto::diagnosis::RunbookRef;
use opsmesh_runbooks::Library;

fn library() -> Option<&'static Library> {
    static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| match Library::built_in() {
            Ok(library) => Some(library),
            Err(err) => {
                tracing::warn!(error = %err, "built-in runbooks unavailable");
                None
            }
        })
        .as_ref()
}

/// A runbook section as the console and MCP show it.
#[derive(Debug, Clone, Serialize)]
pub struct SectionText {
    pub runbook_id: String,
    pub title: String,
    pub version: String,
    pub section: String,
    pub text: String,
    /// Whether the text is the one the decision followed (its SHA-256 matches the
    /// diagnosis' `content_hash`); `false` when the runbook changed since.
    pub hash_matches: bool,
}

/// The text of the section `reference` names, from the built-in runbooks.
pub fn section(reference: &RunbookRef) -> Option<SectionText> {
    let (runbook, section) = library()?.find(reference)?;
    let current = runbook.reference(section);
    Some(SectionText {
        runbook_id: runbook.front.id.clone(),
        title: runbook.front.title.clone(),
        version: runbook.front.version.clone(),
        section: section.heading.clone(),
        text: section.text.clone(),
        hash_matches: current.content_hash == reference.content_hash,
    })
}

/// One search hit.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub runbook_id: String,
    pub version: String,
    pub section: String,
    pub score: f32,
    pub text: String,
}

/// BM25 search over every runbook section.
pub fn search(query: &str, limit: usize) -> Vec<SearchHit> {
    let Some(library) = library() else {
        return Vec::new();
    };
    library
        .search(query, limit)
        .into_iter()
        .map(|(reference, score)| SearchHit {
            text: section(&reference).map(|s| s.text).unwrap_or_default(),
            runbook_id: reference.id,
            version: reference.version,
            section: reference.section,
            score,
        })
        .collect()
}
