//! Splunk and Alertmanager bodies → `opsmesh.alerts.v1` payloads.

mod wire;

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, error::Category, value::RawValue};

use opsmesh_proto::{
    Severity,
    alert::{Alert, AlertSourceKind, AlertStatus, Entity, EntityKind, FieldValue, Row},
};
use opsmesh_runtime::problem::Problem;

use wire::{WireRow, wire_rows};

use crate::{
    config::EntityFields,
    fingerprint,
    names::{self, NameKind},
    unusable,
};

/// Limits and defaults the normaliser applies.
pub struct Normalizer<'a> {
    pub fields: &'a FieldIndex,
    pub max_rows: usize,
    /// Alerts in one Alertmanager request.
    pub max_alerts: usize,
    /// Characters kept of an unusable entity value.
    pub max_unusable_chars: usize,
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
/// action (a superset: all rows plus the action's configuration), as JSON values: the slow
/// path, which names the field path of whatever has the wrong type. Unknown keys are
/// ignored: Splunk adds keys across versions.
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
    opsmesh_test: Option<bool>,
}

/// The same body once every field has its type, parsed straight from the text when it can be
/// (no intermediate JSON tree: this runs for every alert). `R` is how `result` is held before
/// it is known to be needed.
#[derive(Debug, Deserialize)]
struct SplunkFields<R = Row> {
    sid: Option<String>,
    search_name: Option<String>,
    app: Option<String>,
    owner: Option<String>,
    results_link: Option<String>,
    result: Option<R>,
    #[serde(default, deserialize_with = "wire_rows")]
    rows: Option<Vec<Row>>,
    rows_truncated: Option<bool>,
    cluster: Option<String>,
    severity: Option<String>,
    opsmesh_test: Option<bool>,
}

impl SplunkFields {
    /// A type error on the fast path is parsed again as JSON values, to name where it is.
    fn parse(text: &str) -> Result<Self, Problem> {
        match Self::parse_fast(text) {
            Ok(fields) => Ok(fields),
            Err(e) if e.classify() == Category::Data => {
                Self::from_values(parse_body(text, "a Splunk alert body")?)
            }
            Err(e) => Err(malformed(e.to_string())),
        }
    }

    fn parse_fast(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<SplunkFields<&RawValue>>(text).and_then(|fields| {
            fields.read_result(|raw| serde_json::from_str(raw.get()).map(|WireRow(row)| row))
        })
    }

    fn from_values(body: SplunkBody) -> Result<Self, Problem> {
        SplunkFields {
            sid: optional_string(body.sid, "/sid")?,
            search_name: optional_string(body.search_name, "/search_name")?,
            app: optional_string(body.app, "/app")?,
            owner: optional_string(body.owner, "/owner")?,
            results_link: optional_string(body.results_link, "/results_link")?,
            result: body.result,
            rows: body
                .rows
                .map(|rows| parse_rows(rows, "/rows"))
                .transpose()?,
            rows_truncated: body.rows_truncated,
            cluster: optional_string(body.cluster, "/cluster")?,
            severity: optional_string(body.severity, "/severity")?,
            opsmesh_test: body.opsmesh_test,
        }
        .read_result(|result| parse_row(result, || "/result".to_owned()))
    }
}

impl<R> SplunkFields<R> {
    /// Reads `result` only when there are no rows: it then names the entity (see
    /// `Normalizer::splunk`); next to rows it is unused, and not even parsed.
    fn read_result<E>(self, read: impl FnOnce(R) -> Result<Row, E>) -> Result<SplunkFields, E> {
        let unused = self.rows.as_ref().is_some_and(|rows| !rows.is_empty());
        Ok(SplunkFields {
            result: match self.result {
                Some(result) if !unused => Some(read(result)?),
                _ => None,
            },
            sid: self.sid,
            search_name: self.search_name,
            app: self.app,
            owner: self.owner,
            results_link: self.results_link,
            rows: self.rows,
            rows_truncated: self.rows_truncated,
            cluster: self.cluster,
            severity: self.severity,
            opsmesh_test: self.opsmesh_test,
        })
    }
}

/// A Splunk body, normalised.
#[derive(Debug)]
pub struct SplunkAlert {
    pub alert: Alert,
    /// The body carried `"opsmesh_test": true` (the app's "send test alert"): validate and
    /// answer, but open no incident.
    pub test: bool,
}

impl Normalizer<'_> {
    /// `body` is the request's JSON text; `source` is the authenticated sender's name.
    pub fn splunk(&self, body: &str, source: &str) -> Result<SplunkAlert, Problem> {
        let fields = SplunkFields::parse(body)?;
        let test = fields.opsmesh_test.unwrap_or(false);
        Ok(SplunkAlert {
            alert: self.splunk_alert(fields, source)?,
            test,
        })
    }

    fn splunk_alert(&self, body: SplunkFields, source: &str) -> Result<Alert, Problem> {
        let sid = body
            .sid
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("/sid", "required"))?;
        let name = match body.search_name {
            Some(name) if !name.trim().is_empty() => name,
            // Ad-hoc searches have no name; the sid is the only identity Splunk gives.
            _ => format!("adhoc search {}", sid_stem(&sid)),
        };
        let results_link = body.results_link.map(validate_link).transpose()?;

        // Only the opsmesh alert action sends `rows`; the built-in Webhook sends `result`.
        let source_kind = if body.rows.is_some() {
            AlertSourceKind::SplunkAlertAction
        } else {
            AlertSourceKind::SplunkWebhook
        };
        let mut rows = match (body.rows, body.result) {
            // The alert action sends no rows when even one would not fit its body limit;
            // `result` (the first row, shortened) still names the entity.
            (Some(rows), Some(result)) if rows.is_empty() => vec![result],
            (Some(rows), _) => rows,
            (None, Some(result)) => vec![result],
            (None, None) => return Err(invalid("/result", "`result` (or `rows`) is required")),
        };
        let mut truncated = body.rows_truncated.unwrap_or(false);
        if rows.len() > self.max_rows {
            rows.truncate(self.max_rows);
            truncated = true;
        }
        let no_row = Row::new();
        let first = rows.first().unwrap_or(&no_row);
        let picked = self.fields.pick(first);
        let entity = self.entity(&picked, body.cluster.as_deref());
        let severity = match body.severity {
            Some(s) => Some(parse_severity(&s, "/severity")?),
            None => picked.severity(),
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
            app: body.app,
            owner: body.owner,
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

    /// Panics unless the slow path gives the alert the fast path gave for `text` (tests and
    /// fuzzing): the two must read a body the same way.
    pub fn check_fast_path(&self, text: &str) {
        let Ok(fast) = SplunkFields::parse_fast(text) else {
            return;
        };
        let slow = parse_body(text, "a Splunk alert body")
            .and_then(SplunkFields::from_values)
            .unwrap_or_else(|p| panic!("fast path accepted what the slow path refuses: {p:?}"));
        assert_eq!(fast.opsmesh_test, slow.opsmesh_test);
        match (self.splunk_alert(fast, "s"), self.splunk_alert(slow, "s")) {
            (Ok(mut fast), Ok(slow)) => {
                fast.received_at = slow.received_at;
                assert_eq!(fast, slow);
            }
            (Err(fast), Err(slow)) => assert_eq!(format!("{fast:?}"), format!("{slow:?}")),
            (fast, slow) => panic!("fast path {fast:?} but slow path {slow:?}"),
        }
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
        if group.alerts.len() > self.max_alerts {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-many-alerts",
                "Too many alerts in one request",
                format!(
                    "{} alerts; at most {} per request (receiver.max_alerts_per_request): \
                     lower Alertmanager's max_alerts for this receiver",
                    group.alerts.len(),
                    self.max_alerts
                ),
            )
            .at("/alerts"));
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
                let picked = self.fields.pick(&row);
                let entity = self.entity(&picked, None);
                let severity = picked.severity().unwrap_or(Severity::Medium);
                let sender_fingerprint = match am.fingerprint {
                    Some(fp) if names::is_fingerprint(&fp) => fp,
                    Some(_) => {
                        return Err(invalid(
                            &format!("{base}/fingerprint"),
                            "must be 1 to 64 hexadecimal characters",
                        ));
                    }
                    None => fingerprint::of("alertmanager", &name, &entity),
                };
                let fingerprint = fingerprint::of_alertmanager(source, &sender_fingerprint);
                let results_link = am
                    .generator_url
                    .filter(|u| !u.is_empty())
                    .map(|u| validate_link(u).map_err(|p| p.at(format!("{base}/generatorURL"))))
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

    /// Extracts the entity through the configured field mapping, validating every name. A
    /// value that is not a usable name does not refuse the alert (it is authenticated, and
    /// losing it would hide whatever it reports): the entity then keeps only the cluster and
    /// lists the unusable values, quoted, so nothing downstream builds a target from them.
    fn entity(&self, picked: &Picked<'_>, body_cluster: Option<&str>) -> Entity {
        let mut unusable = Vec::new();
        let mut pick = |attribute: Attribute, kind: NameKind| -> Option<String> {
            let (field, value) = picked.get(attribute)?;
            match names::validate(value, kind) {
                Ok(()) => Some(value.to_owned()),
                Err(why) => {
                    unusable.push(unusable::field(field, value, why, self.max_unusable_chars));
                    None
                }
            }
        };
        let namespace = pick(Attribute::Namespace, NameKind::Label);
        let inference_service = pick(Attribute::InferenceService, NameKind::Label);
        let pod = pick(Attribute::Pod, NameKind::Subdomain);
        let policy = pick(Attribute::Policy, NameKind::Subdomain);
        let application = pick(Attribute::Application, NameKind::Subdomain);
        let cluster = pick(Attribute::Cluster, NameKind::Subdomain);
        let cluster = match (cluster, body_cluster) {
            (Some(cluster), _) => Some(cluster),
            (None, Some(value)) => match names::validate(value, NameKind::Subdomain) {
                Ok(()) => Some(value.to_owned()),
                Err(why) => {
                    unusable.push(unusable::field(
                        "cluster",
                        value,
                        why,
                        self.max_unusable_chars,
                    ));
                    None
                }
            },
            (None, None) => None,
        }
        .unwrap_or_else(|| self.default_cluster.to_owned());
        if !unusable.is_empty() {
            return Entity {
                cluster: Some(cluster),
                unusable,
                ..Entity::default()
            };
        }
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
        Entity {
            cluster: Some(cluster),
            namespace,
            kind,
            name,
            policy,
            application,
            unusable: Vec::new(),
        }
    }
}

/// What a row field can name, in the order of [`EntityFields`]' lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribute {
    Cluster,
    Namespace,
    InferenceService,
    Pod,
    Policy,
    Application,
    Severity,
}

impl Attribute {
    const ALL: [Self; 7] = [
        Self::Cluster,
        Self::Namespace,
        Self::InferenceService,
        Self::Pod,
        Self::Policy,
        Self::Application,
        Self::Severity,
    ];

    fn candidates(self, fields: &EntityFields) -> &[String] {
        match self {
            Self::Cluster => &fields.cluster,
            Self::Namespace => &fields.namespace,
            Self::InferenceService => &fields.inference_service,
            Self::Pod => &fields.pod,
            Self::Policy => &fields.policy,
            Self::Application => &fields.application,
            Self::Severity => &fields.severity,
        }
    }
}

/// [`EntityFields`] turned around: for each field name, the attributes it can supply and at
/// which priority (its place in that attribute's list). A row is read once, rather than
/// looked up once per candidate name (two dozen by default).
pub struct FieldIndex {
    by_name: HashMap<String, Vec<(Attribute, usize)>, foldhash::fast::RandomState>,
}

impl FieldIndex {
    pub fn new(fields: &EntityFields) -> Self {
        let mut by_name: HashMap<String, Vec<_>, _> = HashMap::default();
        for attribute in Attribute::ALL {
            for (priority, name) in attribute.candidates(fields).iter().enumerate() {
                by_name
                    .entry(name.clone())
                    .or_default()
                    .push((attribute, priority));
            }
        }
        Self { by_name }
    }

    /// For each attribute, the row's first candidate field (in the configured order) that has
    /// a non-empty value.
    fn pick<'r>(&self, row: &'r Row) -> Picked<'r> {
        let mut best = [None; Attribute::ALL.len()];
        for (field, value) in row {
            let Some(attributes) = self.by_name.get(field.as_str()) else {
                continue;
            };
            let Some(value) = value.first().filter(|v| !v.is_empty()) else {
                continue;
            };
            for &(attribute, priority) in attributes {
                let slot: &mut Option<(usize, &str, &str)> = &mut best[attribute as usize];
                if slot.is_none_or(|(best, _, _)| priority < best) {
                    *slot = Some((priority, field.as_str(), value));
                }
            }
        }
        Picked(best)
    }
}

/// Per attribute: `(priority, field, value)` of the field that supplies it.
struct Picked<'r>([Option<(usize, &'r str, &'r str)>; Attribute::ALL.len()]);

impl<'r> Picked<'r> {
    /// The field name and value that supply `attribute`.
    fn get(&self, attribute: Attribute) -> Option<(&'r str, &'r str)> {
        self.0[attribute as usize].map(|(_, field, value)| (field, value))
    }

    fn severity(&self) -> Option<Severity> {
        self.get(Attribute::Severity)
            .and_then(|(_, value)| Severity::parse_lenient(value))
    }
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
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
fn validate_link(link: String) -> Result<String, Problem> {
    match url::Url::parse(&link) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(link),
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

#[cfg(test)]
mod tests;
