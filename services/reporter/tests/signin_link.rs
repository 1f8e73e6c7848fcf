//! One-time sign-in links (`reporter.console.signin_link_file`), over real HTTP: the link opens
//! one session with the role of its line, then signs nobody in again, and a wrong token is
//! refused without a session.

mod support;

use reqwest::StatusCode;

use support::{
    HecServer, RunningReporter,
    console::{client, get_page, set_cookie, write_lines},
    memory_bus,
};

const LINK: &str = "link-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signin_link_opens_one_session_and_is_then_spent() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let links = write_lines(dir.path(), "links", &[format!("demo:{LINK}:viewer")]);
    let links = links.display().to_string();
    let reporter = RunningReporter::start_with_file(
        &bus,
        &hec,
        None,
        &[
            ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true"),
            (
                "OPSMESH__REPORTER__CONSOLE__SIGNIN_LINK_FILE",
                links.as_str(),
            ),
            ("OPSMESH__REPORTER__CONSOLE__COOKIE_SECURE", "false"),
        ],
    )
    .await;
    let base = format!("http://{}", reporter.addr);
    let link = format!("{base}/console/login?token={LINK}");

    let wrong = client()
        .get(format!(
            "{base}/console/login?token=not-the-link-token-0123"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&wrong, "opsmesh_session").is_none());

    let first = client().get(&link).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()["location"], "/console/incidents");
    let session = set_cookie(&first, "opsmesh_session").expect("a session cookie");
    let (status, page) = get_page(&format!("{base}/console/incidents"), &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("demo"),
        "signed in as the link's user: {page}"
    );
    let decided = client()
        .get(format!("{base}/api/approvals"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        decided.status(),
        StatusCode::OK,
        "the session reads the API"
    );

    let again = client().get(&link).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/login?error=1"),
        "{:?}",
        again.headers()
    );
    assert!(
        set_cookie(&again, "opsmesh_session").is_none(),
        "a spent link signs nobody in"
    );
    // The session it opened lives on.
    let (status, _) = get_page(&format!("{base}/console/incidents"), &session).await;
    assert_eq!(status, StatusCode::OK);
    reporter.stop().await.expect("a clean stop");
}
