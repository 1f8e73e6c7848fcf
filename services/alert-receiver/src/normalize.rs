//! Splunk and Alertmanager bodies → `opsmesh.alerts.v1` payloads.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, error::Category};

use opsmesh_proto::{
    Severity,
    alert::{Alert, AlertSourceKind, AlertStatus, Entity, EntityKind, FieldValue, Row},
};
use opsmesh_runtime::problem::Problem;

use crate::{config::EntityFields, fingerprint, names};

/// Limits and defaults the normaliser applies.
pub struct Normalizer<'a> {
    pub fields: &'a EntityFields,
    pub max_rows: usize,
    pub default_cluster: &'a str,
}

/// `400`: the body is not JSON at all.
pub fn malformed(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed-json",
        "The body is not valid JSON",
        detail,
    )
}

/// Parses the body straight into its expected shape (no intermediate JSON tree): a syntax
/// error is `400 malformed-json`, valid JSON of the wrong shape `422 invalid-alert`.
fn parse_body<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Problem> {
    serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => invalid("", format!("not {what}: {e}")),
        Category::Syntax | Category::Eof | Category::Io => malformed(e.to_string()),
    })
}

fn invalid(pointer: &str, detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-alert",
        "The alert payload is invalid",
        detail,
    )
    .at(pointer)
}

/// The body of Splunk's built-in Webhook action, or the richer body of the opsmesh alert
/// action (a superset: all rows plus the action's configuration). Unknown keys are ignored:
/// Splunk adds keys across versions.
#[derive(Debug, Deserialize)]
struct SplunkBody {
    sid: Option<Value>,
    search_name: Option<Value>,
    app: Option<Value>,
    owner: Option<Value>,
    results_link: Option<Value>,
    result: Option<Value>,
    rows: Option<Value>,
    rows_truncated: Option<bool>,
    cluster: Option<Value>,
    severity: Option<Value>,
}

impl Normalizer<'_> {
    /// `body` is the request's JSON text; `source` is the authenticated sender's name.
    pub fn splunk(&self, body: &str, source: &str) -> Result<Alert, Problem> {
        let body: SplunkBody = parse_body(body, "a Splunk alert body")?;
        let sid = required_string(body.sid, "/sid")?;
        let name = match optional_string(body.search_name, "/search_name")? {
            Some(name) if !name.trim().is_empty() => name,
            // Ad-hoc searches have no name; the sid is the only identity Splunk gives.
            _ => format!("adhoc search {}", sid_stem(&sid)),
        };
        let results_link = optional_string(body.results_link, "/results_link")?
            .map(|link| validate_link(&link))
            .transpose()?;

        // Only the opsmesh alert action sends `rows`; the built-in Webhook sends `result`.
        let source_kind = if body.rows.is_some() {
            AlertSourceKind::SplunkAlertAction
        } else {
            AlertSourceKind::SplunkWebhook
        };
        let first_row = |result| parse_row(result, || "/result".to_owned());
        let (mut rows, pointer_base) = match (body.rows, body.result) {
            (Some(rows), result) => match (parse_rows(rows, "/rows")?, result) {
                // The alert action sends no rows when even one would not fit its body limit;
                // `result` (the first row, shortened) still names the entity.
                (rows, Some(result)) if rows.is_empty() => (vec![first_row(result)?], "/result"),
                (rows, _) => (rows, "/rows/0"),
            },
            (None, Some(result)) => (vec![first_row(result)?], "/result"),
            (None, None) => return Err(invalid("/result", "`result` (or `rows`) is required")),
        };
        let mut truncated = body.rows_truncated.unwrap_or(false);
        if rows.len() > self.max_rows {
            rows.truncate(self.max_rows);
            truncated = true;
        }
        let first = rows.first().cloned().unwrap_or_default();
        let cluster = optional_string(body.cluster, "/cluster")?;
        let entity = self.entity(&first, pointer_base, cluster.as_deref())?;
        let severity = match optional_string(body.severity, "/severity")? {
            Some(s) => Some(parse_severity(&s, "/severity")?),
            None => self.severity_from_row(&first),
        }
        .unwrap_or(Severity::Medium);
        Ok(Alert {
            fingerprint: fingerprint::of("splunk", &name, &entity),
            source_kind,
            source: source.to_owned(),
            name,
            status: AlertStatus::Firing,
            severity,
            sid: Some(sid),
            app: optional_string(body.app, "/app")?,
            owner: optional_string(body.owner, "/owner")?,
            results_link,
            rows,
            rows_truncated: truncated,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            entity,
            starts_at: None,
            received_at: Utc::now(),
        })
    }

    /// Prometheus Alertmanager webhook (version 4): one alert per entry of `alerts`.
    pub fn alertmanager(&self, body: &str, source: &str) -> Result<Vec<Alert>, Problem> {
        #[derive(Deserialize)]
        struct Group {
            version: String,
            alerts: Vec<AmAlert>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct AmAlert {
            status: String,
            labels: BTreeMap<String, String>,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
            starts_at: Option<DateTime<Utc>>,
            generator_url: Option<String>,
            fingerprint: Option<String>,
        }
        let group: Group = parse_body(body, "an Alertmanager webhook body")?;
        if group.version != "4" {
            return Err(invalid(
                "/version",
                format!(
                    "unsupported Alertmanager webhook version {:?}; expected \"4\"",
                    group.version
                ),
            ));
        }
        if group.alerts.is_empty() {
            return Err(invalid("/alerts", "no alerts in the group"));
        }
        group
            .alerts
            .into_iter()
            .enumerate()
            .map(|(i, am)| {
                let base = format!("/alerts/{i}");
                let name = am
                    .labels
                    .get("alertname")
                    .cloned()
                    .ok_or_else(|| invalid(&format!("{base}/labels/alertname"), "required"))?;
                let status = match am.status.as_str() {
                    "firing" => AlertStatus::Firing,
                    "resolved" => AlertStatus::Resolved,
                    other => {
                        return Err(invalid(
                            &format!("{base}/status"),
                            format!("must be \"firing\" or \"resolved\", got {other:?}"),
                        ));
                    }
                };
                let row: Row = am
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), FieldValue::One(v.clone())))
                    .collect();
                let entity = self.entity(&row, &format!("{base}/labels"), None)?;
                let severity = self.severity_from_row(&row).unwrap_or(Severity::Medium);
                let fingerprint = match am.fingerprint {
                    Some(fp) if names::is_fingerprint(&fp) => fp,
                    Some(_) => {
                        return Err(invalid(
                            &format!("{base}/fingerprint"),
                            "must be 1 to 64 hexadecimal characters",
                        ));
                    }
                    None => fingerprint::of("alertmanager", &name, &entity),
                };
                let results_link = am
                    .generator_url
                    .filter(|u| !u.is_empty())
                    .map(|u| validate_link(&u).map_err(|p| p.at(format!("{base}/generatorURL"))))
                    .transpose()?;
                Ok(Alert {
                    source_kind: AlertSourceKind::Alertmanager,
                    source: source.to_owned(),
                    name,
                    status,
                    severity,
                    fingerprint,
                    sid: None,
                    app: None,
                    owner: None,
                    results_link,
                    rows: vec![row],
                    rows_truncated: false,
                    labels: am.labels,
                    annotations: am.annotations,
                    entity,
                    starts_at: am.starts_at,
                    received_at: Utc::now(),
                })
            })
            .collect()
    }

    fn severity_from_row(&self, row: &Row) -> Option<Severity> {
        first_field(row, &self.fields.severity).and_then(|(_, v)| Severity::parse_lenient(v))
    }

    /// Extracts the entity through the configured field mapping, validating every name.
    fn entity(&self, row: &Row, base: &str, cluster: Option<&str>) -> Result<Entity, Problem> {
        let pick =
            |candidates: &[String], kind: names::NameKind| -> Result<Option<String>, Problem> {
                match first_field(row, candidates) {
                    None => Ok(None),
                    Some((field, value)) => names::validate(value, kind)
                        .map(|()| Some(value.to_owned()))
                        .map_err(|why| invalid(&format!("{base}/{}", escape_pointer(field)), why)),
                }
            };
        let namespace = pick(&self.fields.namespace, names::NameKind::Label)?;
        let inference_service = pick(&self.fields.inference_service, names::NameKind::Label)?;
        let pod = pick(&self.fields.pod, names::NameKind::Subdomain)?;
        let policy = pick(&self.fields.policy, names::NameKind::Subdomain)?;
        let application = pick(&self.fields.application, names::NameKind::Subdomain)?;
        let cluster = match pick(&self.fields.cluster, names::NameKind::Subdomain)? {
            Some(c) => c,
            None => match cluster {
                Some(c) => {
                    names::validate(c, names::NameKind::Subdomain)
                        .map_err(|why| invalid("/cluster", why))?;
                    c.to_owned()
                }
                None => self.default_cluster.to_owned(),
            },
        };
        let (kind, name) = if let Some(name) = inference_service {
            (Some(EntityKind::Inferenceservice), Some(name))
        } else if let Some(name) = pod {
            (Some(EntityKind::Pod), Some(name))
        } else if let Some(name) = application.clone() {
            (Some(EntityKind::Application), Some(name))
        } else if namespace.is_some() {
            (Some(EntityKind::Namespace), None)
        } else {
            (None, None)
        };
        Ok(Entity {
            cluster: Some(cluster),
            namespace,
            kind,
            name,
            policy,
            application,
        })
    }
}

fn first_field<'r>(row: &'r Row, candidates: &'r [String]) -> Option<(&'r str, &'r str)> {
    candidates.iter().find_map(|field| {
        row.get(field)
            .and_then(FieldValue::first)
            .filter(|v| !v.is_empty())
            .map(|v| (field.as_str(), v))
    })
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn required_string(value: Option<Value>, pointer: &str) -> Result<String, Problem> {
    optional_string(value, pointer)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(pointer, "required"))
}

fn optional_string(value: Option<Value>, pointer: &str) -> Result<Option<String>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            pointer,
            format!("must be a string, got {}", type_name(&other)),
        )),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_severity(value: &str, pointer: &str) -> Result<Severity, Problem> {
    Severity::parse_lenient(value).ok_or_else(|| {
        invalid(
            pointer,
            format!("unknown severity {value:?}; use info, low, medium, high, critical or 1-6"),
        )
    })
}

fn parse_rows(value: Value, pointer: &str) -> Result<Vec<Row>, Problem> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, row)| parse_row(row, || format!("{pointer}/{i}")))
            .collect(),
        other => Err(invalid(
            pointer,
            format!("must be an array of rows, got {}", type_name(&other)),
        )),
    }
}

/// A row keeps strings and arrays of strings; numbers and booleans become their text (some
/// senders do not quote them); nested objects are refused.
/// `pointer` names the row in error messages; it is only built when there is one.
fn parse_row(value: Value, pointer: impl Fn() -> String) -> Result<Row, Problem> {
    let Value::Object(map) = value else {
        return Err(invalid(
            &pointer(),
            format!("must be an object, got {}", type_name(&value)),
        ));
    };
    map_to_row(map, pointer)
}

fn map_to_row(map: Map<String, Value>, pointer: impl Fn() -> String) -> Result<Row, Problem> {
    let mut row = Row::new();
    for (key, value) in map {
        let at = || format!("{}/{}", pointer(), escape_pointer(&key));
        let field = match value {
            Value::Null => continue,
            Value::Array(items) => FieldValue::Many(
                items
                    .into_iter()
                    .map(|item| {
                        scalar_text(item)
                            .ok_or_else(|| invalid(&at(), "multivalue entries must be strings"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => FieldValue::One(
                scalar_text(other)
                    .ok_or_else(|| invalid(&at(), "must be a string or an array of strings"))?,
            ),
        };
        row.insert(key, field);
    }
    Ok(row)
}

fn scalar_text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The results link is shown to humans, never fetched: it only has to be an http(s) URL.
fn validate_link(link: &str) -> Result<String, Problem> {
    match url::Url::parse(link) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(link.to_owned())
        }
        Ok(url) => Err(invalid(
            "/results_link",
            format!("scheme {:?} is not http(s)", url.scheme()),
        )),
        Err(err) => Err(invalid("/results_link", format!("not a URL: {err}"))),
    }
}

/// `scheduler__admin__search__RMD5…_at_1718035500_4123` → the part before `_at_`, which stays
/// the same across runs of one ad-hoc search.
fn sid_stem(sid: &str) -> &str {
    sid.split("_at_").next().unwrap_or(sid)
}
