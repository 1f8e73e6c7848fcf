//! The incident list's filters, on `GET /api/incidents` and `/console/incidents`: `state`,
//! `namespace`, and the opening time `since` / `until` (RFC 3339, or a duration ago such as
//! `90m`, `24h`, `7d`). Each parameter is validated, and a bad one is refused naming it.

use chrono::{DateTime, Duration, Utc};
use strum::VariantArray;

use opsmesh_proto::IncidentState;

use crate::timeline::IncidentSummary;

/// The query parameters, in the order the form shows them.
pub const PARAMS: [&str; 4] = ["state", "namespace", "since", "until"];
/// Longest value taken for any parameter (an RFC 3339 time with nanoseconds is 35).
const MAX_VALUE_CHARS: usize = 64;
/// Kubernetes namespace names: DNS-1123 labels.
const MAX_NAMESPACE_CHARS: usize = 63;
/// Furthest back a relative time may reach.
const MAX_AGO_DAYS: i64 = 3660;

#[derive(Debug, thiserror::Error)]
#[error("query parameter `{param}`: {problem}")]
pub struct FilterError {
    pub param: String,
    pub problem: String,
}

fn refuse(param: &str, problem: impl Into<String>) -> FilterError {
    FilterError {
        param: param.to_owned(),
        problem: problem.into(),
    }
}

/// The statuses an incident can have (see `IncidentSummary::status`).
pub fn statuses() -> Vec<String> {
    let mut all: Vec<String> = crate::timeline::NOT_YET_REMEDIATED
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for state in IncidentState::VARIANTS.iter().map(ToString::to_string) {
        if !all.contains(&state) {
            all.push(state);
        }
    }
    all
}

/// A validated filter.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub state: Option<String>,
    pub namespace: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The `(parameter, value)` pairs of a query string as given (the form shows them back, also
/// when they are invalid); nothing for a query that does not parse.
pub fn given(query: &str) -> Vec<(String, String)> {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

impl ListFilter {
    /// Parses a query string (`state=resolved&namespace=ml-team-a&since=24h`); empty values
    /// mean "any" (an HTML form sends every field).
    pub fn parse(query: &str, now: DateTime<Utc>) -> Result<Self, FilterError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| refuse("query", format!("not a valid query string: {e}")))?
            .into_inner();
        let mut filter = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (param, value) in pairs {
            let value = value.trim().to_owned();
            if !PARAMS.contains(&param.as_str()) {
                return Err(refuse(
                    &param,
                    format!("unknown parameter; the filters are {}", PARAMS.join(", ")),
                ));
            }
            if seen.contains(&param) {
                return Err(refuse(&param, "given more than once"));
            }
            seen.push(param.clone());
            if value.is_empty() {
                continue;
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                return Err(refuse(
                    &param,
                    format!("longer than {MAX_VALUE_CHARS} characters"),
                ));
            }
            match param.as_str() {
                "state" => filter.state = Some(state(&value)?),
                "namespace" => filter.namespace = Some(namespace(&value)?),
                "since" => filter.since = Some(time(&param, &value, now)?),
                _ => filter.until = Some(time(&param, &value, now)?),
            }
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && until <= since
        {
            return Err(refuse(
                "until",
                format!("{until} is not after since ({since})"),
            ));
        }
        Ok(filter)
    }

    /// Whether the incident passes: its status, its namespace, and its opening time within
    /// `since` (inclusive) and `until` (exclusive); an incident not opened yet fails a time
    /// filter.
    pub fn matches(&self, incident: &IncidentSummary) -> bool {
        let opened = incident.opened_at;
        self.state.as_ref().is_none_or(|s| *s == incident.status)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| incident.namespace.as_ref() == Some(n))
            && self.since.is_none_or(|s| opened.is_some_and(|o| o >= s))
            && self.until.is_none_or(|u| opened.is_some_and(|o| o < u))
    }
}

fn state(value: &str) -> Result<String, FilterError> {
    let known = statuses();
    if known.iter().any(|s| s == value) {
        Ok(value.to_owned())
    } else {
        Err(refuse(
            "state",
            format!("unknown state {value:?}; one of {}", known.join(", ")),
        ))
    }
}

fn namespace(value: &str) -> Result<String, FilterError> {
    let bytes = value.as_bytes();
    let label = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = value.len() <= MAX_NAMESPACE_CHARS
        && bytes.first().is_some_and(label)
        && bytes.last().is_some_and(label)
        && bytes.iter().all(|b| label(b) || *b == b'-');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(refuse(
            "namespace",
            format!(
                "{value:?} is not a Kubernetes namespace name (lower-case letters, digits and \
                 '-', starting and ending with a letter or digit, at most {MAX_NAMESPACE_CHARS})"
            ),
        ))
    }
}

/// An RFC 3339 time, or a duration before `now` (humantime: `90m`, `24h`, `7d`).
fn time(param: &str, value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, FilterError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime_serde::re::humantime::parse_duration(value).map_err(|e| {
        refuse(
            param,
            format!(
                "{value:?} is neither an RFC 3339 time (2026-01-31T08:00:00Z) nor a duration \
                 ago (90m, 24h, 7d): {e}"
            ),
        )
    })?;
    Duration::from_std(ago)
        .ok()
        .filter(|ago| *ago <= Duration::days(MAX_AGO_DAYS))
        .map(|ago| now - ago)
        .ok_or_else(|| {
            refuse(
                param,
                format!("{value:?} reaches back more than {MAX_AGO_DAYS} days"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn every_filter_is_parsed_and_empty_values_mean_any() {
        let f = ListFilter::parse(
            "state=resolved&namespace=ml-team-a&since=24h&until=2026-03-01T11:00:00Z",
            now(),
        )
        .unwrap();
        assert_eq!(f.state.as_deref(), Some("resolved"));
        assert_eq!(f.namespace.as_deref(), Some("ml-team-a"));
        assert_eq!(f.since, Some("2026-02-28T12:00:00Z".parse().unwrap()));
        assert_eq!(f.until, Some("2026-03-01T11:00:00Z".parse().unwrap()));
        let any = ListFilter::parse("state=&namespace=", now()).unwrap();
        assert!(any.state.is_none() && any.namespace.is_none());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (query, param, says) in [
            (
                "state=fixed",
                "state",
                "one of received, diagnosed, planned",
            ),
            (
                "namespace=ML_team",
                "namespace",
                "not a Kubernetes namespace",
            ),
            ("since=yesterday", "since", "neither an RFC 3339 time"),
            ("until=99999999d", "until", "more than 3660 days"),
            ("since=1h&until=2h", "until", "is not after since"),
            ("colour=red", "colour", "unknown parameter"),
            ("state=resolved&state=escalated", "state", "more than once"),
        ] {
            let err = ListFilter::parse(query, now()).unwrap_err();
            assert_eq!(err.param, param, "{query}: {err}");
            assert!(err.to_string().contains(says), "{query}: {err}");
        }
    }
}
