//! Alerts into incidents: the same fingerprint coalesces into one open incident (a storm is
//! one incident and one diagnosis), related alerts for the same target within a window attach
//! to it, and a resolved incident reopens only after a cooldown. The state is mirrored to the
//! compacted `opsmesh.incidents.v1` so a restarted or newly assigned replica rebuilds it.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};

use opsmesh_proto::{
    alert::{Alert, AlertStatus},
    incident::{IncidentRecord, IncidentStatus},
};

/// What an alert means for incidents.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A new incident (or a reopened one): diagnose it.
    Open(IncidentRecord),
    /// Part of an incident already being handled: record, do not diagnose again.
    Attach(IncidentRecord),
    /// The sender says the condition ended.
    Resolve(IncidentRecord),
    /// A resolution for nothing open: nothing to do.
    Ignore,
}

pub struct Incidents {
    cooldown: chrono::Duration,
    related_window: chrono::Duration,
    by_fingerprint: Mutex<HashMap<String, IncidentRecord>>,
}

impl Incidents {
    pub fn new(cooldown: Duration, related_window: Duration) -> Self {
        Self {
            cooldown: chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::minutes(30)),
            related_window: chrono::Duration::from_std(related_window)
                .unwrap_or(chrono::Duration::minutes(15)),
            by_fingerprint: Mutex::new(HashMap::new()),
        }
    }

    /// Restores a record read back from the compacted topic (newest wins).
    pub fn restore(&self, record: IncidentRecord) {
        let mut map = self
            .by_fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let newer = map.get(&record.fingerprint).is_none_or(|have| {
            (record.generation, record.last_alert_at) >= (have.generation, have.last_alert_at)
        });
        if newer {
            map.insert(record.fingerprint.clone(), record);
        }
    }

    pub fn count(&self) -> usize {
        self.by_fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// What one alert means, without changing the state: the caller publishes the returned
    /// record (and the diagnosis), then calls [`Incidents::apply`] — so a failed publish
    /// leaves the state as it was and the retry decides the same.
    pub fn on_alert(&self, alert_id: uuid::Uuid, alert: &Alert, now: DateTime<Utc>) -> Decision {
        let map = self
            .by_fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let target = alert.entity.target();
        if alert.status == AlertStatus::Resolved {
            return match map.get(&alert.fingerprint) {
                Some(record) if record.status == IncidentStatus::Open => {
                    let mut record = record.clone();
                    record.status = IncidentStatus::Resolved;
                    record.resolved_at = Some(now);
                    Decision::Resolve(record)
                }
                _ => Decision::Ignore,
            };
        }
        if let Some(record) = map.get(&alert.fingerprint) {
            // The alert that opened the incident, delivered again (at-least-once): decide the
            // same, so the same diagnosis id is published and dropped downstream.
            if record.first_alert_id == alert_id && record.status == IncidentStatus::Open {
                return Decision::Open(record.clone());
            }
            let cooling = record
                .resolved_at
                .is_some_and(|resolved| now - resolved < self.cooldown);
            if record.status == IncidentStatus::Open || cooling {
                let mut record = record.clone();
                record.alert_count += 1;
                record.last_alert_at = now;
                return Decision::Attach(record);
            }
        }
        // A different alert about a target with an open incident joins that incident.
        if let Some(target) = &target
            && let Some(record) = map.values().find(|r| {
                r.status == IncidentStatus::Open
                    && r.target.as_ref() == Some(target)
                    && now - r.last_alert_at < self.related_window
            })
        {
            let mut record = record.clone();
            record.alert_count += 1;
            record.last_alert_at = now;
            return Decision::Attach(record);
        }
        let generation = map.get(&alert.fingerprint).map_or(1, |r| r.generation + 1);
        let record = IncidentRecord {
            fingerprint: alert.fingerprint.clone(),
            incident_id: if generation == 1 {
                alert.fingerprint.clone()
            } else {
                format!("{}-{generation}", alert.fingerprint)
            },
            generation,
            status: IncidentStatus::Open,
            target,
            opened_at: now,
            last_alert_at: now,
            resolved_at: None,
            alert_count: 1,
            first_alert_id: alert_id,
        };
        Decision::Open(record)
    }

    /// Makes a published record the current state.
    pub fn apply(&self, record: IncidentRecord) {
        let mut map = self
            .by_fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(record.fingerprint.clone(), record);
    }

    /// The open incident with this id, marked resolved (the remediator reported an outcome);
    /// publish it, then [`Incidents::apply`] it.
    pub fn resolution(&self, incident_id: &str, now: DateTime<Utc>) -> Option<IncidentRecord> {
        let map = self
            .by_fingerprint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut record = map
            .values()
            .find(|r| r.incident_id == incident_id && r.status == IncidentStatus::Open)?
            .clone();
        record.status = IncidentStatus::Resolved;
        record.resolved_at = Some(now);
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use opsmesh_proto::{
        Severity,
        alert::{AlertSourceKind, Entity, EntityKind},
    };

    use super::*;

    fn alert(fingerprint: &str, name: &str) -> Alert {
        Alert {
            source_kind: AlertSourceKind::SplunkAlertAction,
            source: "splunk".into(),
            name: "n".into(),
            status: AlertStatus::Firing,
            severity: Severity::High,
            fingerprint: fingerprint.into(),
            sid: None,
            app: None,
            owner: None,
            results_link: None,
            rows: vec![],
            rows_truncated: false,
            labels: Default::default(),
            annotations: Default::default(),
            entity: Entity {
                namespace: Some("a".into()),
                kind: Some(EntityKind::Inferenceservice),
                name: Some(name.into()),
                ..Entity::default()
            },
            starts_at: None,
            received_at: Utc::now(),
        }
    }

    fn incidents() -> Incidents {
        Incidents::new(Duration::from_secs(1800), Duration::from_secs(900))
    }

    #[test]
    fn a_storm_is_one_incident() {
        let incidents = incidents();
        let now = Utc::now();
        let a = alert("fp", "m");
        let Decision::Open(record) = incidents.on_alert(uuid::Uuid::now_v7(), &a, now) else {
            panic!()
        };
        incidents.apply(record);
        for i in 1..50 {
            let at = now + chrono::Duration::seconds(10 * i);
            match incidents.on_alert(uuid::Uuid::now_v7(), &a, at) {
                Decision::Attach(record) => {
                    assert_eq!(record.alert_count, i as u64 + 1);
                    incidents.apply(record);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(incidents.count(), 1);
    }

    #[test]
    fn a_related_alert_for_the_same_target_attaches() {
        let incidents = incidents();
        let now = Utc::now();
        let Decision::Open(record) =
            incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp1", "m"), now)
        else {
            panic!()
        };
        incidents.apply(record);
        let decision = incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp2", "m"), now);
        assert!(
            matches!(decision, Decision::Attach(ref r) if r.fingerprint == "fp1"),
            "{decision:?}"
        );
        let other = incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp3", "other"), now);
        assert!(matches!(other, Decision::Open(_)));
    }

    #[test]
    fn a_resolved_incident_reopens_only_after_the_cooldown() {
        let incidents = incidents();
        let now = Utc::now();
        let Decision::Open(first) =
            incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), now)
        else {
            panic!()
        };
        incidents.apply(first.clone());
        incidents.apply(incidents.resolution(&first.incident_id, now).unwrap());
        let soon = now + chrono::Duration::minutes(5);
        assert!(matches!(
            incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), soon),
            Decision::Attach(_)
        ));
        let later = now + chrono::Duration::minutes(31);
        match incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), later) {
            Decision::Open(record) => {
                assert_eq!(record.generation, 2);
                assert_eq!(record.incident_id, "fp-2");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_redelivered_opening_alert_opens_the_same_incident_again() {
        let incidents = incidents();
        let a = alert("fp", "m");
        let id = uuid::Uuid::now_v7();
        let Decision::Open(first) = incidents.on_alert(id, &a, Utc::now()) else {
            panic!()
        };
        incidents.apply(first.clone());
        assert_eq!(
            incidents.on_alert(id, &a, Utc::now()),
            Decision::Open(first)
        );
    }

    #[test]
    fn an_unapplied_decision_is_decided_again() {
        let incidents = incidents();
        let a = alert("fp", "m");
        let first = incidents.on_alert(uuid::Uuid::now_v7(), &a, Utc::now());
        assert!(matches!(first, Decision::Open(_)));
        assert!(
            matches!(
                incidents.on_alert(uuid::Uuid::now_v7(), &a, Utc::now()),
                Decision::Open(_)
            ),
            "publish failed: retry opens"
        );
    }

    #[test]
    fn restored_state_keeps_coalescing() {
        let before = incidents();
        let Decision::Open(record) =
            before.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), Utc::now())
        else {
            panic!()
        };
        let after = incidents();
        after.restore(record);
        assert!(matches!(
            after.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), Utc::now()),
            Decision::Attach(_)
        ));
    }
}
