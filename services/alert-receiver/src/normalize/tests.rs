use proptest::prelude::*;

use super::*;

/// What [`FieldIndex::pick`] must agree with: each candidate looked up in order.
fn first_field<'r>(row: &'r Row, candidates: &'r [String]) -> Option<(&'r str, &'r str)> {
    candidates.iter().find_map(|field| {
        row.get(field)
            .and_then(FieldValue::first)
            .filter(|v| !v.is_empty())
            .map(|v| (field.as_str(), v))
    })
}

proptest! {
    #[test]
    fn the_index_picks_the_first_candidate_with_a_value(
        // Few letters, so names repeat within and across lists.
        lists in proptest::collection::vec(proptest::collection::vec("[a-d]", 0..4), 7),
        row in proptest::collection::btree_map(
            "[a-e]",
            prop_oneof![
                "[xy]?".prop_map(FieldValue::One),
                proptest::collection::vec("[xy]?", 0..3).prop_map(FieldValue::Many),
            ],
            0..5,
        ),
    ) {
        let fields = EntityFields {
            cluster: lists[0].clone(),
            namespace: lists[1].clone(),
            inference_service: lists[2].clone(),
            pod: lists[3].clone(),
            policy: lists[4].clone(),
            application: lists[5].clone(),
            severity: lists[6].clone(),
        };
        let picked = FieldIndex::new(&fields).pick(&row);
        for attribute in Attribute::ALL {
            prop_assert_eq!(
                picked.get(attribute),
                first_field(&row, attribute.candidates(&fields)),
                "{:?}", attribute
            );
        }
    }
}

#[test]
fn the_fast_path_reads_rows_as_the_slow_path_does() {
    let fields = FieldIndex::new(&EntityFields::default());
    let normalizer = Normalizer {
        fields: &fields,
        max_rows: 2,
        max_alerts: 10,
        max_unusable_chars: 64,
        default_cluster: "default",
    };
    let bodies = [
        r#"{"sid":"s1","search_name":"n","result":{"model_name":"m","n":7,"f":1.0,"e":1e3,"neg":-2,"big":18446744073709551616,"b":true,"gone":null,"mv":["a",1,false]}}"#,
        r#"{"sid":"s1","rows":[{"namespace":"a","namespace":null},{"k":"1","k":"2"},{"x":"dropped by max_rows"}],"result":{"ignored":"because rows"}}"#,
        r#"{"sid":"s1","rows":[],"result":{"inference_service":"model-a"},"severity":"high","cluster":"c1"}"#,
        r#"{"sid":"s1","rows":[],"app":null,"owner":"o","results_link":"https://splunk:8000/x"}"#,
        r#"{"sid":"s1","search_name":null,"rows":[{"mv":[]}],"rows_truncated":true,"unknown":{"deep":[1]}}"#,
        r#"{"sid":"","result":{}}"#,
        r#"{"sid":"s1","result":{"namespace":"Not_A_Name"}}"#,
        r#"{"sid":"s1"}"#,
        r#"{"sid":"s1","result":"unused next to rows","rows":[{"pod":"p-1"}]}"#,
        r#"{"sid":"s1","result":null,"rows":[]}"#,
    ];
    for body in bodies {
        assert!(
            SplunkFields::parse_fast(body).is_ok(),
            "the fast path should read {body}"
        );
        normalizer.check_fast_path(body);
    }
    // Types the rules refuse fail the fast path, and the slow path names the field.
    for (body, pointer) in [
        (r#"{"sid":"s1","result":{"k":{"nested":1}}}"#, "/result/k"),
        (r#"{"sid":"s1","rows":[{"k":[null]}]}"#, "/rows/0/k"),
        (
            r#"{"sid":"s1","rows":[{"a":"1"},{"k/x":[["a"]]}]}"#,
            "/rows/1/k~1x",
        ),
        (r#"{"sid":"s1","rows":"text"}"#, "/rows"),
        (r#"{"sid":7,"result":{}}"#, "/sid"),
    ] {
        assert!(SplunkFields::parse_fast(body).is_err(), "{body}");
        let problem = normalizer.splunk(body, "s").unwrap_err();
        assert_eq!(
            problem.pointer.as_deref(),
            Some(pointer),
            "{body}: {problem:?}"
        );
    }
}
