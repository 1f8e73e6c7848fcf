//! The incident list's filters (state, namespace, opening time) on the API and the console
//! page, validated with errors naming the parameter; and the incident page's LLM narrative,
//! tokens and cost.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use opsmesh_proto::diagnosis::LlmUsage;
use support::{
    HecServer, RunningReporter,
    console::{client, console_reporter, get_page, sign_in},
    eventually,
    incident::{Incident, publish, publish_awaiting},
    memory_bus,
};

const TOKEN: &str = "carol-token-0123456789abcdef";

struct Console {
    reporter: RunningReporter,
    base: String,
    _dir: tempfile::TempDir,
    _hec: HecServer,
}

/// A console with three incidents: awaiting approval in ml-team-a, diagnosed (with an LLM
/// narrative) in ml-team-b, and diagnosed without the LLM in ml-team-b.
async fn console_with_incidents() -> (Console, [Incident; 3]) {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let (reporter, dir) =
        console_reporter(&bus, &hec, &format!("carol@example.com:{TOKEN}:viewer")).await;
    let awaiting = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &awaiting).await;
    let mut narrated = Incident::oom("ml-team-b");
    narrated.diagnosis.payload.narrative = Some(
        "The predictor was OOMKilled 7 times under 256Mi while it peaks at 480Mi [ev1].".into(),
    );
    narrated.diagnosis.payload.llm = LlmUsage {
        used: true,
        model: Some("gpt-4o-mini".into()),
        prompt_tokens: 1200,
        completion_tokens: 300,
        cost_usd: 0.0123,
        discarded: vec!["a claim cited evidence ev9, which does not exist".into()],
    };
    let plain = Incident::oom("ml-team-b");
    for incident in [&narrated, &plain] {
        publish(&bus, &incident.alert).await;
        publish(&bus, &incident.diagnosis).await;
    }
    let base = format!("http://{}", reporter.addr);
    let console = Console {
        reporter,
        base,
        _dir: dir,
        _hec: hec,
    };
    eventually(
        "three incidents listed",
        Duration::from_secs(10),
        || async { (incident_ids(&console, "").await.1.len() == 3).then_some(()) },
    )
    .await;
    (console, [awaiting, narrated, plain])
}

/// `GET /api/incidents?<query>`: the status and the incident ids (or the problem's detail).
async fn incident_ids(console: &Console, query: &str) -> (StatusCode, Vec<String>, String) {
    let response = client()
        .get(format!("{}/api/incidents?{query}", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let ids = body["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    (
        status,
        ids,
        body["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_filters_by_state_namespace_and_time() {
    let (console, [awaiting, narrated, plain]) = console_with_incidents().await;
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let (status, ids, _) = incident_ids(&console, "namespace=ml-team-a").await;
    assert_eq!((status, ids), (StatusCode::OK, vec![awaiting.id.clone()]));
    let (_, ids, _) = incident_ids(&console, "state=diagnosed&namespace=ml-team-b").await;
    assert_eq!(
        sorted(ids),
        sorted(vec![narrated.id.clone(), plain.id.clone()])
    );
    let (_, ids, _) = incident_ids(&console, "state=awaiting_approval&since=1h").await;
    assert_eq!(ids, vec![awaiting.id.clone()]);
    let (_, ids, _) = incident_ids(&console, "until=2020-01-01T00:00:00Z").await;
    assert!(ids.is_empty(), "nothing opened before 2020: {ids:?}");
    let (_, ids, _) = incident_ids(&console, "state=&namespace=&since=&until=").await;
    assert_eq!(ids.len(), 3, "empty values mean any");

    for (query, names) in [
        (
            "state=fixed",
            "query parameter `state`: unknown state \"fixed\"",
        ),
        ("namespace=Team_A", "query parameter `namespace`"),
        ("since=last+week", "query parameter `since`"),
        ("since=1h&until=2h", "query parameter `until`"),
        ("sort=opened", "query parameter `sort`: unknown parameter"),
    ] {
        let (status, _, detail) = incident_ids(&console, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(detail.starts_with(names), "{query}: {detail}");
    }
    console.reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_list_filters_and_refuses_a_bad_filter_on_the_page() {
    let (console, [awaiting, narrated, plain]) = console_with_incidents().await;
    let cookie = sign_in(&console.base, TOKEN).await;
    let url = |query: &str| format!("{}/console/incidents?{query}", console.base);

    let (status, page) = get_page(&url("namespace=ml-team-b&state=diagnosed"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Matching incidents (2)"), "{page}");
    for (incident, shown) in [(&awaiting, false), (&narrated, true), (&plain, true)] {
        let row = format!("data-incident=\"{}\"", incident.id);
        assert_eq!(page.contains(&row), shown, "{} shown: {shown}", incident.id);
    }
    assert!(
        page.contains("<option value=\"diagnosed\" selected>"),
        "the form keeps the state"
    );
    assert!(page.contains(
        "id=\"filter-namespace\" list=\"namespaces\" maxlength=\"63\" value=\"ml-team-b\""
    ));

    let (status, page) = get_page(&url("since=tomorrow"), &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains(
            "id=\"filter-error\">query parameter `since`: &quot;tomorrow&quot; is neither"
        ),
        "{page}"
    );
    assert!(
        page.contains("value=\"tomorrow\""),
        "the form shows the bad value back"
    );
    assert!(!page.contains("class=\"incident-row\""));

    let (_, page) = get_page(&url("until=2020-01-01T00:00:00Z"), &cookie).await;
    assert!(page.contains("No incident matches these filters."));
    console.reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_page_shows_the_llm_narrative_tokens_and_cost() {
    let (console, [_, narrated, plain]) = console_with_incidents().await;
    let cookie = sign_in(&console.base, TOKEN).await;
    let page_of = |id: &str| format!("{}/console/incidents/{id}", console.base);

    let (status, page) = get_page(&page_of(&narrated.id), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"narrative\">The predictor was OOMKilled 7 times under 256Mi while it peaks at 480Mi [ev1].</pre>"),
        "{page}"
    );
    assert!(page.contains("<code>gpt-4o-mini</code>"));
    assert!(page.contains("<span id=\"llm-tokens\">1200 prompt + 300 completion tokens</span>"));
    assert!(page.contains("<span id=\"llm-cost\">$0.0123</span>"));
    assert!(page.contains("a claim cited evidence ev9, which does not exist"));

    let (_, page) = get_page(&page_of(&plain.id), &cookie).await;
    assert!(!page.contains("id=\"narrative\""));
    assert!(page.contains("LLM: not used for this diagnosis."));

    let detail: Value = client()
        .get(format!("{}/api/incidents/{}", console.base, narrated.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["llm"]["completion_tokens"], 300);
    assert_eq!(detail["namespace"], "ml-team-b");
    assert!(detail["narrative"].as_str().unwrap().contains("[ev1]"));
    console.reporter.stop().await.unwrap();
}
