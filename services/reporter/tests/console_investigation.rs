//! The incident page shows the investigator's report taken off `opsmesh.investigations.v1`:
//! findings with their cited tool results (tool, SPL, result digest), root cause, risk,
//! proposals marked as needing approval, steps, tokens, cost and why it stopped.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use opsmesh_proto::{
    Envelope,
    investigation::{InvestigationEvent, InvestigationUpdate},
};
use support::{
    HecServer,
    console::{client, console_reporter, get_page, sign_in},
    eventually,
    incident::{Incident, publish},
    investigation::{event, report, steps},
    memory_bus,
};

const TOKEN: &str = "dave-token-0123456789abcdef";

/// The investigator's messages for `incident`: one step, then the report.
fn investigation(incident: &Incident) -> [Envelope<InvestigationEvent>; 2] {
    let (id, target) = (format!("{}/0", incident.id), incident.target());
    [
        event(
            &id,
            Some(&incident.id),
            InvestigationUpdate::Step(steps()[1].clone()),
        ),
        event(
            &id,
            Some(&incident.id),
            InvestigationUpdate::Report(Box::new(report(&target))),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_page_shows_the_investigation_report_its_citations_and_cost() {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let (reporter, _dir) =
        console_reporter(&bus, &hec, &format!("dave@example.com:{TOKEN}:viewer")).await;
    let base = format!("http://{}", reporter.addr);
    let (investigated, plain) = (Incident::oom("ml-team-a"), Incident::oom("ml-team-a"));
    for incident in [&investigated, &plain] {
        publish(&bus, &incident.alert).await;
        publish(&bus, &incident.diagnosis).await;
    }
    for message in investigation(&investigated) {
        publish(&bus, &message).await;
    }
    let cookie = sign_in(&base, TOKEN).await;
    let page_of = |id: &str| format!("{base}/console/incidents/{id}");
    let page = eventually(
        "the report on the page",
        Duration::from_secs(10),
        || async {
            let (status, page) = get_page(&page_of(&investigated.id), &cookie).await;
            (status == StatusCode::OK && page.contains("id=\"investigation\"")).then_some(page)
        },
    )
    .await;

    assert!(
        page.contains("data-state=\"completed\" data-stop-reason=\"answered\""),
        "{page}"
    );
    assert!(page.contains("<p>The predictor was OOMKilled 7 times in the last hour.</p>"));
    assert!(
        page.contains(
            "<pre class=\"spl\"><code>index=opsmesh sourcetype=&quot;opsmesh:models&quot; | where oom_killed &gt; 0 | stats count</code></pre>"
        ),
        "the cited SPL, escaped: {page}"
    );
    assert!(page.contains("<code>splunk_search</code> · result sha256 <code title=\"5c1b0f6f5d3a3e8f0b7a9d2c4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f\">5c1b0f6f5d3a</code>"));
    assert!(page.contains("id=\"investigation-root-cause\">oom_killed</dd>"));
    assert!(page.contains("id=\"investigation-risk\">high</dd>"));
    assert!(page.contains("id=\"investigation-steps-count\">3</dd>"));
    assert!(page.contains("id=\"investigation-tokens\">1800 prompt + 240 completion</dd>"));
    assert!(page.contains("id=\"investigation-cost\">$0.0042</dd>"));
    assert!(page.contains(
        "<li class=\"proposal\"><span class=\"badge\">needs approval</span> <strong>patch_memory_limit</strong>"
    ));
    assert!(page.contains("<li>unknown_evidence: 1</li>"));
    let steps = &page[page.find("id=\"investigation-steps\"").unwrap()..];
    let steps = &steps[..steps.find("</table>").unwrap()];
    assert_eq!(steps.matches("<tr><td>").count(), 3, "one row a step");
    assert!(page.contains(&format!(
        "investigation {}/0: completed (answered), 1 findings, 3 steps, $0.0042",
        investigated.id
    )));

    let (_, page) = get_page(&page_of(&plain.id), &cookie).await;
    assert!(
        !page.contains("id=\"investigation\""),
        "no report, no section"
    );

    let detail: Value = client()
        .get(format!("{base}/api/incidents/{}", investigated.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["investigation"]["stop_reason"], "answered");
    assert_eq!(detail["investigation"]["usage"]["cost_usd"], 0.0042);
    reporter.stop().await.unwrap();
}
