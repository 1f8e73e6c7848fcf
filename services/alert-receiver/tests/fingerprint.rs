//! Property: the fingerprint ignores volatile fields and changes with the entity.

use proptest::prelude::*;
use serde_json::json;

use opsmesh_alert_receiver::fingerprint_of_splunk_body;

fn body(
    namespace: &str,
    model: &str,
    error_rate: &str,
    restarts: u32,
    time: u64,
    sid: &str,
) -> serde_json::Value {
    json!({
        "sid": sid,
        "search_name": "KServe model error rate above 5%",
        "result": {"_time": time.to_string(), "model_name": model, "namespace": namespace,
                   "error_rate": error_rate, "restarts": restarts.to_string()}
    })
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]"
}

proptest! {
    #[test]
    fn volatile_fields_do_not_change_it(
        ns in name(), model in name(),
        rate_a in "0\\.[0-9]{1,4}", rate_b in "0\\.[0-9]{1,4}",
        restarts_a in 0u32..10_000, restarts_b in 0u32..10_000,
        time_a in 1_600_000_000u64..1_900_000_000, time_b in 1_600_000_000u64..1_900_000_000,
        sid_a in "[a-z_0-9]{5,30}", sid_b in "[a-z_0-9]{5,30}",
    ) {
        let a = fingerprint_of_splunk_body(body(&ns, &model, &rate_a, restarts_a, time_a, &sid_a)).unwrap();
        let b = fingerprint_of_splunk_body(body(&ns, &model, &rate_b, restarts_b, time_b, &sid_b)).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_entity_changes_it(ns_a in name(), ns_b in name(), model_a in name(), model_b in name()) {
        prop_assume!((ns_a.clone(), model_a.clone()) != (ns_b.clone(), model_b.clone()));
        let a = fingerprint_of_splunk_body(body(&ns_a, &model_a, "0.3", 1, 1_700_000_000, "s")).unwrap();
        let b = fingerprint_of_splunk_body(body(&ns_b, &model_b, "0.3", 1, 1_700_000_000, "s")).unwrap();
        prop_assert_ne!(a, b);
    }
}

/// Fingerprints are Kafka keys and incident keys: a release that computed them differently
/// would split every open incident in two.
#[test]
fn it_is_the_same_as_in_earlier_releases() {
    let fingerprint = fingerprint_of_splunk_body(body(
        "ml-team-a",
        "llama-3-8b",
        "0.31",
        7,
        1_700_000_000,
        "s",
    ))
    .unwrap();
    assert_eq!(fingerprint, "5abc80e1026f0eb55ba4a741ae9d492d");
}
