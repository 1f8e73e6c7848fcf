//! Type-specific validation of objects written through the API (`422 Invalid` naming the
//! field): names, label and annotation values, quantities, and the required fields of
//! InferenceServices, Pods, ResourceQuotas and Applications.

use serde_json::Value;

use opsmesh_proto::{
    name::{is_dns_label, is_dns_subdomain},
    quantity::{parse_bytes, parse_quantity},
};

use crate::{
    resources::{self, ResourceDef},
    status::ApiError,
};

use super::World;

impl World {
    /// Type-specific validation (`422 Invalid` naming the field).
    pub(super) fn validate(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        obj: &Value,
    ) -> Result<(), ApiError> {
        let invalid = |field: &str, problem: String| ApiError::invalid(def, name, field, &problem);
        let ok_name = if *def == resources::NAMESPACES {
            is_dns_label(name)
        } else {
            is_dns_subdomain(name)
        };
        if !ok_name {
            return Err(invalid(
                "metadata.name",
                format!(
                    "{name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
                ),
            ));
        }
        let _ = ns;
        for section in ["labels", "annotations"] {
            if let Some(m) = obj["metadata"].get(section)
                && let Some(m) = m.as_object()
                && let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string())
            {
                return Err(invalid(
                    &format!("metadata.{section}.{k}"),
                    "must be a string".into(),
                ));
            }
        }
        let check_resources = |path: &str, resources: &Value| -> Result<(), ApiError> {
            for kind in ["limits", "requests"] {
                if let Some(m) = resources.get(kind).and_then(Value::as_object) {
                    for (res, v) in m {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            other => other.to_string(),
                        };
                        if parse_quantity(&text).is_err() {
                            return Err(invalid(
                                &format!("{path}.{kind}.{res}"),
                                format!(
                                    "{text:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                                ),
                            ));
                        }
                    }
                }
            }
            let mem = |kind: &str| {
                resources
                    .get(kind)
                    .and_then(|m| m.get("memory"))
                    .and_then(Value::as_str)
                    .and_then(|s| parse_bytes(s).ok())
            };
            if let (Some(req), Some(lim)) = (mem("requests"), mem("limits"))
                && req > lim
            {
                return Err(invalid(
                    &format!("{path}.requests"),
                    format!("{req}: must be less than or equal to memory limit of {lim}"),
                ));
            }
            Ok(())
        };
        match def.kind {
            "InferenceService" => {
                let predictor = obj["spec"]
                    .get("predictor")
                    .filter(|p| p.is_object())
                    .ok_or_else(|| {
                        invalid(
                            "spec.predictor",
                            "Required value: a predictor is required".into(),
                        )
                    })?;
                for f in ["minReplicas", "maxReplicas"] {
                    if let Some(v) = predictor.get(f)
                        && v.as_i64().is_none_or(|n| n < 0)
                    {
                        return Err(invalid(
                            &format!("spec.predictor.{f}"),
                            format!("{v}: must be greater than or equal to 0"),
                        ));
                    }
                }
                if let (Some(min), Some(max)) = (
                    predictor.get("minReplicas").and_then(Value::as_i64),
                    predictor.get("maxReplicas").and_then(Value::as_i64),
                ) && max != 0
                    && max < min
                {
                    return Err(invalid(
                        "spec.predictor.maxReplicas",
                        format!("{max}: must be greater than or equal to minReplicas ({min})"),
                    ));
                }
                if let Some(cs) = predictor.get("containers").and_then(Value::as_array) {
                    for (i, c) in cs.iter().enumerate() {
                        if c.get("image")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                            && i == 0
                            && predictor.get("model").is_none()
                        {
                            return Err(invalid(
                                &format!("spec.predictor.containers[{i}].image"),
                                "Required value".into(),
                            ));
                        }
                        if let Some(r) = c.get("resources") {
                            check_resources(
                                &format!("spec.predictor.containers[{i}].resources"),
                                r,
                            )?;
                        }
                    }
                }
                if let Some(r) = predictor.get("model").and_then(|m| m.get("resources")) {
                    check_resources("spec.predictor.model.resources", r)?;
                }
            }
            "Pod" => {
                let cs = obj["spec"]["containers"]
                    .as_array()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| invalid("spec.containers", "Required value".into()))?;
                for (i, c) in cs.iter().enumerate() {
                    if c.get("name")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(invalid(
                            &format!("spec.containers[{i}].name"),
                            "Required value".into(),
                        ));
                    }
                    if let Some(r) = c.get("resources") {
                        check_resources(&format!("spec.containers[{i}].resources"), r)?;
                    }
                }
            }
            "ResourceQuota" => {
                if let Some(m) = obj["spec"].get("hard").and_then(Value::as_object) {
                    for (res, v) in m {
                        let text = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        if parse_quantity(&text).is_err() {
                            return Err(invalid(
                                &format!("spec.hard[{res}]"),
                                format!("{text:?}: must be a quantity"),
                            ));
                        }
                    }
                }
            }
            "Application"
                if obj["spec"]["destination"]
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_none() =>
            {
                return Err(invalid(
                    "spec.destination.namespace",
                    "Required value".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
