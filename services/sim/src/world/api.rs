//! The Kubernetes API verbs on the store: get, list, create, replace, patch, delete, with
//! optimistic concurrency, subresources, dry runs and pod admission.

use serde_json::{Value, json};

use crate::{
    patch::{field_paths, json_patch, merge_patch},
    resources::{self, ResourceDef},
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
};

use super::{Caller, ObjKey, Owners, PatchType, World, key, now_ts};

impl World {
    fn check_namespace(&self, def: &ResourceDef, ns: &str) -> Result<(), ApiError> {
        if def.namespaced && self.get_obj(&resources::NAMESPACES, "", ns).is_none() {
            return Err(ApiError::not_found(&resources::NAMESPACES, ns));
        }
        Ok(())
    }

    pub fn get(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.reconcile();
        self.get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    pub fn list(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        let items: Vec<Value> = self
            .objects_of(def, ns)
            .filter(|o| labels.matches(o["metadata"].get("labels")) && fields.matches(o))
            .cloned()
            .collect();
        Ok(json!({
            "kind": def.list_kind(),
            "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    /// Checks the identity fields of a body against the request.
    pub(super) fn check_identity(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the provided object ({kind}) does not match the resource ({})",
                def.kind
            )));
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
            && av != def.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version of the provided object ({av}) does not match the request ({})",
                def.api_version()
            )));
        }
        if def.namespaced
            && let Some(bns) = body["metadata"].get("namespace").and_then(Value::as_str)
            && bns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(name) = name
            && let Some(bname) = body["metadata"].get("name").and_then(Value::as_str)
            && bname != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bname}) does not match the name on the URL ({name})"
            )));
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        self.check_identity(def, ns, None, &body)?;
        let name = match body["metadata"].get("name").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => match body["metadata"].get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    let suffix = format!("{:05x}", (self.rv * 2654435761) % 0xfffff);
                    format!("{prefix}{suffix}")
                }
                None => {
                    return Err(ApiError::invalid(
                        def,
                        "",
                        "metadata.name",
                        "name or generateName is required",
                    ));
                }
            },
        };
        body["metadata"]["name"] = json!(name);
        if self.get_obj(def, ns, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        self.check_namespace(def, ns)?;
        if def.status_subresource
            && def.custom
            && let Some(m) = body.as_object_mut()
        {
            m.remove("status");
        }
        if let Some(m) = body["metadata"].as_object_mut() {
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        self.validate(def, ns, &name, &body)?;
        self.admit(def, ns, &name, &mut body)?;
        if caller.dry_run {
            return Ok(self.dry_run_view(def, ns, &name, body));
        }
        self.put(def, ns, &name, body.clone());
        let k = key(def, ns, &name);
        let owners = field_paths(&body)
            .into_keys()
            .map(|p| (p, (caller.manager(), "Update")))
            .collect();
        self.owners.insert(k, owners);
        self.after_write(def, ns, &name);
        self.reconcile();
        self.get_obj(def, ns, &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, &name))
    }

    /// What a dry run returns: the object as it would be stored, not stored.
    fn dry_run_view(&self, def: &ResourceDef, ns: &str, name: &str, mut body: Value) -> Value {
        body["apiVersion"] = json!(def.api_version());
        body["kind"] = json!(def.kind);
        body["metadata"]["name"] = json!(name);
        if def.namespaced {
            body["metadata"]["namespace"] = json!(ns);
        }
        if let Some(old) = self.get_obj(def, ns, name) {
            for f in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
                if let Some(v) = old["metadata"].get(f) {
                    body["metadata"][f] = v.clone();
                }
            }
        } else {
            body["metadata"]["creationTimestamp"] = json!(now_ts(&self.clock));
        }
        body
    }

    /// PUT: full replacement with optimistic concurrency.
    pub fn replace(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        status_only: bool,
        body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        self.check_identity(def, ns, Some(name), &body)?;
        let current = self
            .get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        match body["metadata"]
            .get("resourceVersion")
            .and_then(Value::as_str)
        {
            None | Some("") => {
                return Err(ApiError::invalid(
                    def,
                    name,
                    "metadata.resourceVersion",
                    "0x0: must be specified for an update",
                ));
            }
            Some(rv) if Some(rv) != current["metadata"]["resourceVersion"].as_str() => {
                return Err(ApiError::conflict(def, name));
            }
            _ => {}
        }
        let new = self.merge_subresource(def, &current, body, status_only);
        self.write_update(def, ns, name, &current, new, caller, None)
    }

    /// Keeps what the endpoint may not change: status on the main resource of kinds with a
    /// status subresource, everything but status on `/status`.
    pub(super) fn merge_subresource(
        &self,
        def: &ResourceDef,
        current: &Value,
        mut body: Value,
        status_only: bool,
    ) -> Value {
        if status_only {
            let mut out = current.clone();
            out["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            if let Some(rv) = body["metadata"].get("resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            return out;
        }
        if def.status_subresource {
            match current.get("status") {
                Some(s) => body["status"] = s.clone(),
                None => {
                    if let Some(m) = body.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        body
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        current: &Value,
        mut new: Value,
        caller: &Caller,
        apply_owned: Option<Owners>,
    ) -> Result<Value, ApiError> {
        // Identity and bookkeeping are the server's.
        for f in [
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "name",
            "namespace",
        ] {
            match current["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        new["apiVersion"] = json!(def.api_version());
        new["kind"] = json!(def.kind);
        self.validate(def, ns, name, &new)?;
        if caller.dry_run {
            return Ok(new);
        }
        let k = key(def, ns, name);
        let owners = match apply_owned {
            Some(o) => o,
            None => {
                let mut owners = self.owners.get(&k).cloned().unwrap_or_default();
                let before = field_paths(current);
                let after = field_paths(&new);
                owners.retain(|p, _| after.contains_key(p));
                for (p, v) in &after {
                    if before.get(p) != Some(v) {
                        owners.insert(p.clone(), (caller.manager(), "Update"));
                    }
                }
                owners
            }
        };
        self.owners.insert(k, owners);
        self.put(def, ns, name, new);
        self.after_write(def, ns, name);
        self.reconcile();
        self.get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    /// PATCH with any of the four patch types.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        status_only: bool,
        kind: PatchType,
        body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        if caller.force && kind != PatchType::Apply {
            return Err(ApiError::new(
                422,
                "Invalid",
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        if kind == PatchType::Strategic && def.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        if kind == PatchType::Apply {
            return self.apply(def, ns, name, status_only, body, caller);
        }
        let current = self
            .get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let mut patched = current.clone();
        match kind {
            PatchType::Json => json_patch(&mut patched, &body).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?,
            _ => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                if let Some(rv) = body["metadata"]
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    && Some(rv) != current["metadata"]["resourceVersion"].as_str()
                {
                    return Err(ApiError::conflict(def, name));
                }
                merge_patch(&mut patched, &body);
            }
        }
        self.check_identity(def, ns, Some(name), &patched)?;
        let new = self.merge_subresource(def, &current, patched, status_only);
        self.write_update(def, ns, name, &current, new, caller, None)
    }

    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        options: &Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        let current = self
            .get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let pre = &options["preconditions"];
        if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str)
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(def, name));
        }
        if let Some(uid) = pre.get("uid").and_then(Value::as_str)
            && Some(uid) != current["metadata"]["uid"].as_str()
        {
            return Err(ApiError::conflict(def, name));
        }
        let mut gone = current;
        gone["metadata"]["deletionTimestamp"] = json!(now_ts(&self.clock));
        if caller.dry_run {
            return Ok(gone);
        }
        self.remove(def, ns, name);
        if *def == resources::NAMESPACES {
            gone["status"] = json!({"phase": "Terminating"});
            let keys: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|(_, n, _)| n == name)
                .cloned()
                .collect();
            for k in keys {
                self.objects.remove(&k);
                self.owners.remove(&k);
            }
        }
        self.after_write(def, ns, name);
        self.reconcile();
        Ok(gone)
    }

    fn after_write(&mut self, def: &ResourceDef, ns: &str, name: &str) {
        self.refresh_managed_fields(def, ns, name);
        if *def == resources::PODS {
            self.pod_written(ns, name);
        }
    }

    /// Admission for pods created through the API: quota, LimitRange, Kyverno.
    fn admit(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &mut Value,
    ) -> Result<(), ApiError> {
        if *def != resources::PODS {
            return Ok(());
        }
        self.admit_pod(ns, body).map_err(|msg| {
            ApiError::forbidden(
                Some(def),
                name,
                format!("pods {name:?} is forbidden: {msg}"),
            )
        })
    }
}
