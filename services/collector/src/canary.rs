//! Canary evidence: the configured `canaryTrafficPercent` and how KServe splits the traffic
//! between the latest revision and the last one rolled out.

use serde_json::Value;

use opsmesh_proto::telemetry::{ModelHealth, RevisionTraffic};

pub fn observe(health: &mut ModelHealth, isvc: &Value) {
    health.canary_traffic_percent = isvc["spec"]["predictor"]["canaryTrafficPercent"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok());
    health.traffic = isvc["status"]["components"]["predictor"]["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(RevisionTraffic {
                revision: t["revisionName"].as_str()?.to_owned(),
                percent: u32::try_from(t["percent"].as_u64()?).ok()?,
                latest: t["latestRevision"].as_bool().unwrap_or(false),
            })
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_split_is_read_from_the_status() {
        let isvc = json!({
            "spec": {"predictor": {"canaryTrafficPercent": 20}},
            "status": {"components": {"predictor": {"traffic": [
                {"tag": "latest", "revisionName": "m-predictor-00002", "percent": 20, "latestRevision": true},
                {"tag": "prev", "revisionName": "m-predictor-00001", "percent": 80, "latestRevision": false},
            ]}}},
        });
        let mut h = ModelHealth::default();
        observe(&mut h, &isvc);
        assert_eq!(h.canary_traffic_percent, Some(20));
        assert_eq!(
            h.traffic,
            [
                RevisionTraffic {
                    revision: "m-predictor-00002".into(),
                    percent: 20,
                    latest: true
                },
                RevisionTraffic {
                    revision: "m-predictor-00001".into(),
                    percent: 80,
                    latest: false
                },
            ]
        );
    }
}
