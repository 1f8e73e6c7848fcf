//! Who is asking and how ([`Caller`], [`PatchType`]), and the log of mutating requests.

use serde::Serialize;
use serde_json::Value;

use crate::duration::format_duration;

use super::{World, now_ts};

/// One mutating request (or any request RBAC refused), as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    /// Virtual time of the request (RFC 3339) and since the start (`3m12s`).
    pub at: String,
    pub elapsed: String,
    pub elapsed_ms: u64,
    /// `kubernetes` or `argocd`.
    pub api: &'static str,
    /// `create`, `update`, `patch`, `apply`, `delete`, `sync`, `rollback` (`get`, `list` when
    /// refused).
    pub verb: String,
    /// `pods`, `inferenceservices.serving.kserve.io`, `applications.argoproj.io`.
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    pub user_agent: String,
    pub body: Value,
    /// HTTP status the simulator answered.
    pub status: u16,
}

/// Who is asking and how.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub user_agent: String,
    pub field_manager: Option<String>,
    pub dry_run: bool,
    pub force: bool,
}

impl Caller {
    pub(super) fn manager(&self) -> String {
        self.field_manager.clone().unwrap_or_else(|| {
            let ua = self.user_agent.split('/').next().unwrap_or("").trim();
            if ua.is_empty() {
                "unknown".into()
            } else {
                ua.to_owned()
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Json => "json",
            Self::Strategic => "strategic",
            Self::Apply => "apply",
        }
    }
}

impl World {
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        api: &'static str,
        verb: &str,
        resource: String,
        subresource: Option<String>,
        namespace: &str,
        name: &str,
        caller: &Caller,
        patch_type: Option<PatchType>,
        body: Value,
        status: u16,
    ) {
        let elapsed = self.clock.elapsed();
        let seq = self.log.len() as u64 + 1;
        self.log.push(RequestRecord {
            seq,
            at: now_ts(&self.clock),
            elapsed: format_duration(elapsed),
            elapsed_ms: elapsed.as_millis() as u64,
            api,
            verb: verb.to_owned(),
            resource,
            subresource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dry_run: caller.dry_run,
            field_manager: caller.field_manager.clone(),
            patch_type: patch_type.map(|p| p.name().to_owned()),
            user_agent: caller.user_agent.clone(),
            body,
            status,
        });
    }

    pub fn requests(&self) -> &[RequestRecord] {
        &self.log
    }

    pub fn clear_requests(&mut self) {
        self.log.clear();
    }
}
