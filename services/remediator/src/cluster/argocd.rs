//! ArgoCD over its REST API: reading an application, syncing it, and the namespaces it
//! deploys to.

use std::time::Duration;

use serde_json::{Value, json};

use opsmesh_proto::{Target, remediation::ActionRecord};
use opsmesh_runtime::secret::Secret;

use super::{ActError, Cluster};

pub(super) struct ArgoCd {
    http: reqwest::Client,
    url: String,
    /// Read at each request: a rotated token file is used without a restart.
    token: Secret<String>,
}

impl ArgoCd {
    pub(super) fn new(
        url: String,
        token: Secret<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .user_agent("opsmesh-remediator")
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }
}

impl Cluster {
    fn argo(&self) -> Result<&ArgoCd, ActError> {
        self.argocd.as_ref().ok_or_else(|| {
            ActError::Refused("no ArgoCD API configured (remediator.argocd.url and token)".into())
        })
    }

    pub(super) async fn argo_app(&self, a: &ActionRecord) -> Result<Value, ActError> {
        let name = app_name(a)?;
        let argo = self.argo()?;
        let response = argo
            .http
            .get(format!("{}/api/v1/applications/{name}", argo.url))
            .bearer_auth(argo.token.get().as_str())
            .send()
            .await
            .map_err(|e| ActError::Transient(format!("argocd get {name}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let msg = format!("argocd get {name}: {status}");
            return Err(if status.is_server_error() {
                ActError::Transient(msg)
            } else {
                ActError::Refused(msg)
            });
        }
        response
            .json()
            .await
            .map_err(|e| ActError::Transient(format!("argocd get {name}: {e}")))
    }

    /// Asks ArgoCD to sync application `name` without pruning (or to dry-run the sync).
    pub(super) async fn argo_sync(&self, name: &str, dry_run: bool) -> Result<(), ActError> {
        let argo = self.argo()?;
        let url = format!("{}/api/v1/applications/{name}/sync", argo.url);
        let body = json!({"dryRun": dry_run, "prune": false});
        let response = argo
            .http
            .post(&url)
            .bearer_auth(argo.token.get().as_str())
            .json(&body)
            .send()
            .await
            .map_err(|e| ActError::Transient(format!("argocd sync {name}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let msg = format!("argocd sync {name}: {status}: {text}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                ActError::Transient(msg)
            } else {
                ActError::Refused(msg)
            });
        }
        Ok(())
    }
}

/// Every namespace an ArgoCD application deploys to: its destination, and the namespace of
/// each resource it manages (a manifest may name its own).
pub(super) fn app_namespaces(app: &Value) -> Vec<String> {
    let destination = app["spec"]["destination"]["namespace"].as_str();
    let managed = app["status"]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["namespace"].as_str());
    let mut namespaces: Vec<String> = destination
        .into_iter()
        .chain(managed)
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned)
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    namespaces
}

pub(super) fn app_name(a: &ActionRecord) -> Result<String, ActError> {
    match a
        .target
        .parse::<Target>()
        .map_err(|e| ActError::Refused(e.to_string()))?
    {
        Target::Application { name, .. } => Ok(name),
        other => Err(ActError::Refused(format!(
            "{} needs an application target, not {other}",
            a.kind
        ))),
    }
}
