//! Server-side apply and field ownership: who owns which field, apply conflicts, and the
//! `managedFields` written back on the object.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{
    patch::{field_paths, fields_v1, merge_patch},
    resources::ResourceDef,
    status::ApiError,
};

use super::{Caller, World, key, now_ts};

/// Field ownership of one object: path → (manager, operation).
pub(super) type Owners = BTreeMap<String, (String, &'static str)>;

impl World {
    /// Server-side apply: field ownership, conflicts with other managers, removal of fields
    /// the manager stopped applying.
    pub(super) fn apply(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        status_only: bool,
        body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        let Some(manager) = caller.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        };
        self.check_identity(def, ns, Some(name), &body)?;
        if body.get("apiVersion").is_none() || body.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        let k = key(def, ns, name);
        let Some(current) = self.get_obj(def, ns, name).cloned() else {
            let mut body = body;
            body["metadata"]["name"] = json!(name);
            let created = self.create(
                def,
                ns,
                body.clone(),
                &Caller {
                    field_manager: Some(manager.clone()),
                    ..caller.clone()
                },
            )?;
            if !caller.dry_run {
                let owners = field_paths(&body)
                    .into_keys()
                    .map(|p| (p, (manager.clone(), "Apply")))
                    .collect();
                self.owners.insert(k, owners);
                self.refresh_managed_fields(def, ns, name);
            }
            return Ok(self.get_obj(def, ns, name).cloned().unwrap_or(created));
        };
        let applied = field_paths(&body);
        let live = field_paths(&current);
        let mut owners = self.owners.get(&k).cloned().unwrap_or_default();
        let mut conflicts = Vec::new();
        for (path, value) in &applied {
            if let Some((owner, _)) = owners.get(path)
                && *owner != manager
                && live.get(path).is_some_and(|v| v != value)
            {
                conflicts.push((path.clone(), owner.clone()));
            }
        }
        if !conflicts.is_empty() && !caller.force {
            return Err(ApiError::apply_conflict(def, name, &conflicts));
        }
        let mut merged = current.clone();
        // Fields this manager applied before and no longer applies (and nobody else owns) go.
        let dropped: Vec<String> = owners
            .iter()
            .filter(|(p, (m, op))| *m == manager && *op == "Apply" && !applied.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &dropped {
            remove_path(&mut merged, p);
            owners.remove(p);
        }
        let mut patch = body.clone();
        if let Some(m) = patch.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        merge_patch(&mut merged, &patch);
        for p in applied.keys() {
            owners.insert(p.clone(), (manager.clone(), "Apply"));
        }
        let new = self.merge_subresource(def, &current, merged, status_only);
        let out = self.write_update(def, ns, name, &current, new, caller, Some(owners))?;
        if caller.dry_run {
            return Ok(out);
        }
        self.refresh_managed_fields(def, ns, name);
        Ok(self.get_obj(def, ns, name).cloned().unwrap_or(out))
    }

    /// `managedFields` from the ownership table.
    pub(super) fn refresh_managed_fields(&mut self, def: &ResourceDef, ns: &str, name: &str) {
        let k = key(def, ns, name);
        let Some(owners) = self.owners.get(&k) else {
            return;
        };
        let mut by: BTreeMap<(String, &'static str), Vec<&String>> = BTreeMap::new();
        for (p, (m, op)) in owners {
            by.entry((m.clone(), op)).or_default().push(p);
        }
        let now = now_ts(&self.clock);
        let entries: Vec<Value> = by
            .into_iter()
            .map(|((manager, op), paths)| {
                json!({
                    "manager": manager,
                    "operation": op,
                    "apiVersion": def.api_version(),
                    "time": now,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&paths),
                })
            })
            .collect();
        if let Some(obj) = self.objects.get_mut(&k) {
            obj["metadata"]["managedFields"] = json!(entries);
        }
    }
}

fn remove_path(obj: &mut Value, path: &str) {
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        match cur.get_mut(*s) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(*last);
    }
}
