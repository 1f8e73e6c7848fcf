//! On-demand investigations in the console and its API: the incident page's Investigate
//! button and the question form publish a valid request on
//! `opsmesh.investigation-requests.v1` and show it queued; the investigator's status, steps
//! and report move it to completed with its citations; bad input is refused naming the field
//! and publishes nothing; viewers cannot queue; a restarted reporter rebuilds the same
//! investigations from the topics; the questions kept are bounded.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use opsmesh_proto::investigation::{InvestigationState, InvestigationUpdate};
use support::{
    HecServer,
    console::{client, console_reporter_for, csrf_of, get_page, sign_in},
    eventually,
    incident::{Incident, publish},
    investigation::{event, requests, run_to_report, status, steps},
    memory_bus,
};

const ALICE: &str = "alice-token-0123456789abcdef";
const VICTOR: &str = "victor-token-0123456789abcdef";

/// Alice approves (and may queue investigations); Victor is a viewer.
fn operators() -> Vec<String> {
    vec![
        format!("alice@example.com:{ALICE}:approver"),
        format!("victor@example.com:{VICTOR}:viewer"),
    ]
}

/// Posts a console form as the signed-in browser of `cookie` would.
async fn post_form(
    base: &str,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .header("Cookie", cookie)
        .header("Origin", base)
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// `GET {base}{path}` with a bearer token, as JSON.
async fn api_get(base: &str, path: &str, token: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn api_investigate(base: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = client()
        .post(format!("{base}/api/investigations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The page at `url` once it contains `marker`.
async fn page_with(url: &str, cookie: &str, marker: &str) -> String {
    eventually(marker, Duration::from_secs(10), || async {
        let (status, page) = get_page(url, cookie).await;
        (status == StatusCode::OK && page.contains(marker)).then_some(page)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_investigate_button_queues_a_request_and_the_report_completes_it() {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let (reporter, _dir) = console_reporter_for(&bus, &hec, &operators(), &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish(&bus, &incident.alert).await;
    publish(&bus, &incident.diagnosis).await;
    let alice = sign_in(&base, ALICE).await;
    let incident_url = format!("{base}/console/incidents/{}", incident.id);
    let page = page_with(&incident_url, &alice, "id=\"investigate\"").await;

    let response = post_form(
        &base,
        &format!("/console/incidents/{}/investigate", incident.id),
        &alice,
        &[("csrf", &csrf_of(&page))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!(
            "/console/incidents/{}?investigating=inv-",
            incident.id
        )),
        "{location}"
    );

    // One valid request on the queue, with what the timeline knows of the incident.
    let published = requests(&bus).await;
    assert_eq!(published.len(), 1);
    let request = &published[0];
    request.payload.validate().unwrap();
    let id = request.payload.investigation_id.clone();
    assert!(id.starts_with("inv-") && id.len() == 4 + 32, "{id}");
    assert_eq!(request.incident_id.as_deref(), Some(incident.id.as_str()));
    assert_eq!(
        request.payload.incident_id.as_deref(),
        Some(incident.id.as_str())
    );
    assert_eq!(request.payload.requested_by, "console:alice@example.com");
    let facts = request.payload.facts.as_ref().expect("facts");
    let diagnosis = &incident.diagnosis.payload;
    assert_eq!(facts["root_cause"], json!(diagnosis.root_cause));
    assert_eq!(facts["confidence"], json!(diagnosis.confidence));
    assert_eq!(facts["summary"], json!(diagnosis.summary));
    assert_eq!(facts["target"], json!(incident.target()));
    let queries: Vec<&str> = facts["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["query"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = diagnosis
        .evidence
        .iter()
        .map(|e| e.query.as_str())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(queries, expected);

    // Back on the incident page: the notice and the investigation, queued.
    let (_, page) = get_page(&format!("{base}{location}"), &alice).await;
    assert!(page.contains("id=\"investigation-queued\""), "{page}");
    assert!(
        page.contains(&format!(
            "data-investigation=\"{id}\" data-state=\"queued\""
        )),
        "{page}"
    );

    // The investigator runs it: running, a step, the report.
    let investigation_url = format!("{base}/console/investigations/{id}");
    publish(
        &bus,
        &status(
            &id,
            Some(&incident.id),
            InvestigationState::Running,
            "console:alice@example.com",
            "",
        ),
    )
    .await;
    publish(
        &bus,
        &event(
            &id,
            Some(&incident.id),
            InvestigationUpdate::Step(steps()[1].clone()),
        ),
    )
    .await;
    let running = page_with(&investigation_url, &alice, "data-status=\"running\"").await;
    assert!(running.contains("id=\"investigation-steps\""), "{running}");
    assert!(running.contains("<code>splunk_search</code>"), "{running}");
    let spl_argument =
        "{&quot;spl&quot;:&quot;index=opsmesh sourcetype=\\&quot;opsmesh:models\\&quot;";
    assert!(
        running.contains(spl_argument),
        "the step's arguments: {running}"
    );
    let report = &run_to_report(&id, Some(&incident.id), &incident.target())[2];
    publish(&bus, report).await;
    let done = page_with(&investigation_url, &alice, "data-status=\"completed\"").await;
    assert!(
        done.contains("<p>The predictor was OOMKilled 7 times in the last hour.</p>"),
        "{done}"
    );
    assert!(
        done.contains("<pre class=\"spl\"><code>index=opsmesh sourcetype=&quot;opsmesh:models&quot; | where oom_killed &gt; 0 | stats count</code></pre>"),
        "the finding's citation shows the SPL: {done}"
    );
    assert!(done.contains("<details><summary>result</summary><pre>count=7</pre></details>"));
    assert!(done.contains("id=\"investigation-requested-by\">console:alice@example.com</dd>"));
    assert!(done.contains("id=\"investigation-total-cost\">$0.0042</dd>"));
    let page = page_with(
        &incident_url,
        &alice,
        &format!("data-investigation=\"{id}\" data-state=\"completed\""),
    )
    .await;
    assert!(
        page.contains("id=\"investigation\" data-state=\"completed\""),
        "the latest report"
    );

    // The API says the same; the list filters by state.
    let (status_code, detail) = api_get(&base, &format!("/api/investigations/{id}"), ALICE).await;
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!(detail["state"], "completed");
    assert_eq!(detail["steps"], 3);
    assert_eq!(
        detail["report"]["findings"][0]["evidence_ids"],
        json!(["t1"])
    );
    let (_, completed) = api_get(&base, "/api/investigations?state=completed", VICTOR).await;
    assert_eq!(
        completed["investigations"][0]["investigation_id"],
        json!(id)
    );
    let (_, queued) = api_get(&base, "/api/investigations?state=queued", VICTOR).await;
    assert_eq!(queued["investigations"], json!([]));
    let (bad, problem) = api_get(&base, "/api/investigations?state=done", VICTOR).await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"].as_str().unwrap().starts_with("state:"),
        "{problem}"
    );

    // The API queues an incident's investigation too.
    let (accepted, body) = api_investigate(&base, ALICE, json!({"incident_id": incident.id})).await;
    assert_eq!(accepted, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["state"], "queued");
    let (_, queued) = api_get(&base, "/api/investigations?state=queued", ALICE).await;
    assert_eq!(
        queued["investigations"][0]["investigation_id"],
        body["investigation_id"]
    );

    // Splunk gets every step of it under one investigation id: queued, running, step, report.
    let mirrored = eventually(
        "the investigation in Splunk",
        Duration::from_secs(10),
        || async {
            let events: Vec<Value> = hec
                .events()
                .into_iter()
                .filter(|e| e["event"]["payload"]["investigation_id"] == json!(id))
                .collect();
            (events.len() == 4).then_some(events)
        },
    )
    .await;
    assert!(
        mirrored
            .iter()
            .all(|e| e["sourcetype"] == "opsmesh:investigation")
    );
    assert!(
        mirrored
            .iter()
            .all(|e| e["fields"]["investigation_id"] == json!(id))
    );
    let schemas: Vec<&str> = mirrored
        .iter()
        .map(|e| e["event"]["schema"].as_str().unwrap())
        .collect();
    assert_eq!(
        schemas
            .iter()
            .filter(|s| **s == "opsmesh.investigation-requests.v1")
            .count(),
        1
    );
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_question_is_refused_naming_the_field_and_viewers_cannot_queue() {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let (reporter, _dir) = console_reporter_for(&bus, &hec, &operators(), &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish(&bus, &incident.alert).await;
    let alice = sign_in(&base, ALICE).await;
    let list = page_with(
        &format!("{base}/console/investigations"),
        &alice,
        "id=\"ask-question\"",
    )
    .await;
    let csrf = csrf_of(&list);

    let too_long = "x".repeat(2001);
    for (question, namespace, field) in [
        ("", "", "question:"),
        ("   ", "ml-team-a", "question:"),
        (too_long.as_str(), "", "question:"),
        (
            "Why does ml-team-a cost so much?",
            "Not_A_Namespace",
            "namespace:",
        ),
    ] {
        let response = post_form(
            &base,
            "/console/investigations",
            &alice,
            &[
                ("csrf", &csrf),
                ("question", question),
                ("namespace", namespace),
            ],
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{field} {namespace}"
        );
        let page = response.text().await.unwrap();
        assert!(
            page.contains(&format!("id=\"message\">{field}")),
            "{field}: {page}"
        );
    }
    let (status_code, problem) = api_investigate(&base, ALICE, json!({"question": ""})).await;
    assert_eq!(status_code, StatusCode::BAD_REQUEST);
    assert_eq!(problem["pointer"], "/question", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().starts_with("question:"),
        "{problem}"
    );
    let (status_code, problem) = api_investigate(
        &base,
        ALICE,
        json!({"incident_id": incident.id, "question": "why?"}),
    )
    .await;
    assert_eq!(status_code, StatusCode::BAD_REQUEST, "{problem}");
    let (status_code, _) =
        api_investigate(&base, ALICE, json!({"incident_id": "inc-unknown"})).await;
    assert_eq!(status_code, StatusCode::NOT_FOUND);

    // Viewers and strangers: refused before anything is published.
    let victor = sign_in(&base, VICTOR).await;
    let page = page_with(
        &format!("{base}/console/incidents/{}", incident.id),
        &victor,
        "id=\"investigate-viewer-only\"",
    )
    .await;
    assert!(!page.contains("id=\"investigate\""));
    let (_, list) = get_page(&format!("{base}/console/investigations"), &victor).await;
    assert!(
        !list.contains("id=\"ask-question\""),
        "viewers get no question form"
    );
    let refused = post_form(
        &base,
        &format!("/console/incidents/{}/investigate", incident.id),
        &victor,
        &[("csrf", &csrf_of(&page))],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let (status_code, _) = api_investigate(&base, VICTOR, json!({"question": "why?"})).await;
    assert_eq!(status_code, StatusCode::FORBIDDEN);
    let anonymous = client()
        .post(format!("{base}/console/investigations"))
        .header("Origin", &base)
        .form(&[("question", "why?")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged = post_form(
        &base,
        "/console/investigations",
        &alice,
        &[("csrf", "0".repeat(64).as_str()), ("question", "why?")],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "a wrong CSRF token");
    assert!(requests(&bus).await.is_empty(), "nothing published");

    // A good question is queued and shown.
    let response = post_form(
        &base,
        "/console/investigations",
        &alice,
        &[
            ("csrf", &csrf),
            ("question", " Why does ml-team-a cost $329 an hour? "),
            ("namespace", "ml-team-a"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, page) = get_page(&format!("{base}{location}"), &alice).await;
    assert!(page.contains("data-status=\"queued\""), "{page}");
    assert!(
        page.contains("id=\"investigation-question\">Why does ml-team-a cost $329 an hour?</dd>"),
        "{page}"
    );
    let published = requests(&bus).await;
    assert_eq!(published.len(), 1);
    let request = &published[0].payload;
    assert_eq!(
        format!("/console/investigations/{}", request.investigation_id),
        location
    );
    assert_eq!(
        request.question.as_deref(),
        Some("Why does ml-team-a cost $329 an hour?")
    );
    assert_eq!(request.namespace.as_deref(), Some("ml-team-a"));
    assert_eq!(request.incident_id, None);
    assert_eq!(published[0].incident_id, None);
    let list = page_with(
        &format!("{base}/console/investigations?state=queued"),
        &victor,
        &request.investigation_id,
    )
    .await;
    assert!(list.contains("data-state=\"queued\""));
    reporter.stop().await.unwrap();
}

/// The investigations the API lists: id → (state, steps, requested_by, cost).
async fn states(base: &str) -> Vec<(String, String, u64, String, f64)> {
    let (_, list) = api_get(base, "/api/investigations", ALICE).await;
    let mut out: Vec<_> = list["investigations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["investigation_id"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
                i["steps"].as_u64().unwrap(),
                i["requested_by"].as_str().unwrap_or("").to_owned(),
                i["cost_usd"].as_f64().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_reporter_rebuilds_the_same_investigations_from_the_topics() {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let (reporter, _dir) = console_reporter_for(&bus, &hec, &operators(), &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish(&bus, &incident.alert).await;
    publish(&bus, &incident.diagnosis).await;
    eventually("the incident", Duration::from_secs(10), || async {
        (api_get(&base, &format!("/api/incidents/{}", incident.id), ALICE)
            .await
            .0
            == StatusCode::OK)
            .then_some(())
    })
    .await;
    let queue = |body: Value| {
        let base = base.clone();
        async move {
            let (status_code, body) = api_investigate(&base, ALICE, body).await;
            assert_eq!(status_code, StatusCode::ACCEPTED, "{body}");
            body["investigation_id"].as_str().unwrap().to_owned()
        }
    };
    let of_incident = queue(json!({"incident_id": incident.id})).await;
    let completed =
        queue(json!({"question": "Why is ml-team-a slow?", "namespace": "ml-team-a"})).await;
    let failed =
        queue(json!({"question": "What about kube-system?", "namespace": "kube-system"})).await;
    let waiting = queue(json!({"question": "Anything odd today?"})).await;
    publish(
        &bus,
        &status(
            &of_incident,
            Some(&incident.id),
            InvestigationState::Running,
            "console:alice@example.com",
            "attempt 2",
        ),
    )
    .await;
    publish(
        &bus,
        &event(
            &of_incident,
            Some(&incident.id),
            InvestigationUpdate::Step(steps()[0].clone()),
        ),
    )
    .await;
    for message in run_to_report(&completed, None, &incident.target()) {
        publish(&bus, &message).await;
    }
    publish(
        &bus,
        &status(
            &failed,
            None,
            InvestigationState::Failed,
            "console:alice@example.com",
            "namespace kube-system is not allowed",
        ),
    )
    .await;
    let expected = vec![
        (of_incident.clone(), "running", 1, 0.0021),
        (completed.clone(), "completed", 3, 0.0042),
        (failed.clone(), "failed", 0, 0.0),
        (waiting.clone(), "queued", 0, 0.0),
    ];
    let mut expected: Vec<(String, String, u64, String, f64)> = expected
        .into_iter()
        .map(|(id, state, steps, cost)| {
            (
                id,
                state.to_owned(),
                steps,
                "console:alice@example.com".to_owned(),
                cost,
            )
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let before = eventually("every state applied", Duration::from_secs(10), || async {
        let now = states(&base).await;
        (now == expected).then_some(now)
    })
    .await;
    reporter.stop().await.unwrap();

    let (restarted, _dir2) = console_reporter_for(&bus, &hec, &operators(), &[]).await;
    let base = format!("http://{}", restarted.addr);
    eventually(
        "the same investigations after the restart",
        Duration::from_secs(10),
        || async { (states(&base).await == before).then_some(()) },
    )
    .await;
    let (_, detail) = api_get(&base, &format!("/api/incidents/{}", incident.id), ALICE).await;
    assert_eq!(
        detail["investigations"][0]["investigation_id"],
        json!(of_incident)
    );
    assert_eq!(detail["investigations"][0]["detail"], "attempt 2");
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_questions_kept_are_bounded_oldest_first_and_counted() {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let (reporter, _dir) = console_reporter_for(
        &bus,
        &hec,
        &operators(),
        &[("OPSMESH__REPORTER__TIMELINE__MAX_QUESTIONS", "2")],
    )
    .await;
    let base = format!("http://{}", reporter.addr);
    let mut live = client()
        .get(format!("{base}/console/events"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status_code, body) =
            api_investigate(&base, ALICE, json!({"question": format!("question {n}")})).await;
        assert_eq!(status_code, StatusCode::ACCEPTED, "{body}");
        ids.push(body["investigation_id"].as_str().unwrap().to_owned());
    }
    // Live views hear of questions too (no incident: pages of other incidents stay put).
    let expected = format!(
        "data: {{\"incident_id\":null,\"investigation_id\":\"{}\",\"kind\":\"investigation\",\"status\":\"queued\"}}",
        ids[2]
    );
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&expected) {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .unwrap_or_else(|_| panic!("{expected} within 10 s: {seen}"))
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(live);
    let (_, list) = api_get(&base, "/api/investigations", ALICE).await;
    let kept: Vec<&str> = list["investigations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["investigation_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        vec![ids[2].as_str(), ids[1].as_str()],
        "the newest two, newest first"
    );
    // A late message of a forgotten question does not bring it back (the status after it,
    // on the same partition, shows it was read).
    publish(
        &bus,
        &status(
            &ids[0],
            None,
            InvestigationState::Failed,
            "console:alice@example.com",
            "late",
        ),
    )
    .await;
    publish(
        &bus,
        &status(
            &ids[2],
            None,
            InvestigationState::Running,
            "console:alice@example.com",
            "",
        ),
    )
    .await;
    eventually(
        "the later status applied",
        Duration::from_secs(10),
        || async {
            let (_, detail) =
                api_get(&base, &format!("/api/investigations/{}", ids[2]), ALICE).await;
            (detail["state"] == "running").then_some(())
        },
    )
    .await;
    let (gone, _) = api_get(&base, &format!("/api/investigations/{}", ids[0]), ALICE).await;
    assert_eq!(gone, StatusCode::NOT_FOUND);
    assert_eq!(
        reporter
            .metric(
                "opsmesh_reporter_timeline_evictions_total",
                &[("table", "questions")]
            )
            .await,
        1.0
    );
    assert_eq!(
        reporter
            .metric(
                "opsmesh_reporter_timeline_entries",
                &[("table", "questions")]
            )
            .await,
        2.0
    );
    reporter.stop().await.unwrap();
}
