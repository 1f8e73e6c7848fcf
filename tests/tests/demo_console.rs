//! `opsmesh demo` without `--once`: the console it leaves running holds the incidents it
//! played and opens with the one-time sign-in link it prints; `opsmesh status` reads the
//! health of a running mesh.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use opsmesh_tests::{
    binary,
    demo::{Demo, Interrupted},
    eventually, free_port,
};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_leaves_its_incidents_in_a_console_opened_once_by_the_printed_link() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), "30s", Duration::from_secs(120));
    let (stdout, link, admin) = (demo.stdout.clone(), demo.link.clone(), demo.admin.clone());

    // Timelines and the decisive numbers on stdout; the services' logs in the file it names.
    let incidents: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("incident "))
        .map(str::to_owned)
        .collect();
    assert_eq!(incidents.len(), 3, "{stdout}");
    for (text, what) in [
        (
            "service logs: opsmesh-demo/opsmesh.log",
            "where the logs are",
        ),
        ("diagnosis ", "a diagnosis line"),
        ("ledger #", "the remediation ledger"),
        ("memory ", "the OOM's memory step"),
        ("Δ = k·r·t", "the projected saving"),
        ("% over budget", "the overage"),
        ("fix (YAML)", "the developer's YAML fix"),
        ("kind: ResourceQuota", "the YAML itself"),
    ] {
        assert!(
            stdout.contains(text),
            "{what} ({text:?}) missing:\n{stdout}"
        );
    }
    for incident in &incidents {
        let search = format!("index=opsmesh incident_id={incident} | sort _time");
        assert!(stdout.contains(&search), "{search} missing:\n{stdout}");
    }
    for level in [" INFO ", " WARN ", " ERROR ", "\"level\""] {
        assert!(!stdout.contains(level), "a log line on stdout:\n{stdout}");
    }
    assert!(!stdout.contains('\x1b'), "colour on a pipe:\n{stdout}");
    let log = std::fs::read_to_string(dir.path().join("opsmesh-demo/opsmesh.log")).unwrap();
    assert!(log.contains("INFO"), "the service log: {log}");

    // The link opens a session once.
    let http = no_redirects();
    let signed_in = http.get(&link).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/console/incidents");
    let cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("opsmesh_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let base = link.split("/console/").next().unwrap().to_owned();
    let listed: Vec<String> = eventually(
        "the played incidents in the console's API",
        Duration::from_secs(10),
        || async {
            let body: Value = http
                .get(format!("{base}/api/incidents"))
                .header("cookie", &cookie)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let ids: Vec<String> = body["incidents"]
                .as_array()?
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect();
            incidents.iter().all(|i| ids.contains(i)).then_some(ids)
        },
    )
    .await;
    assert_eq!(listed.len(), incidents.len(), "{listed:?}");
    let page = http
        .get(format!("{base}/console/incidents"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for incident in &incidents {
        assert!(html.contains(incident.as_str()), "{incident} not listed");
    }

    let again = http.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 303, "a spent link signs nobody in");
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/login?error=1"),
        "{:?}",
        again.headers()
    );
    assert!(again.headers().get("set-cookie").is_none());
    let unauthenticated = http
        .get(format!("{base}/api/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let status = Command::new(binary("opsmesh"))
        .args(["status", "--url", &admin])
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("ready       yes"), "{text}");
    assert!(text.contains("HEC backlog "), "{text}");
    drop(demo);
}

#[test]
fn status_reads_a_running_mesh_and_names_the_process_that_does_not_answer() {
    let admin = format!("http://127.0.0.1:{}", free_port());
    let silent = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let mesh = Interrupted(
        Command::new(binary("opsmesh"))
            .arg("up")
            .current_dir(dir.path())
            .env_clear()
            .env("OPSMESH__HTTP__LISTEN", "127.0.0.1:0")
            .env(
                "OPSMESH__HTTP__ADMIN_LISTEN",
                admin.trim_start_matches("http://"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = |urls: &[&str]| {
        let mut args = vec!["status"];
        for url in urls {
            args.extend(["--url", url]);
        }
        let output = Command::new(binary("opsmesh"))
            .args(&args)
            .env_clear()
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let started = std::time::Instant::now();
    let text = loop {
        let (ok, text) = status(&[&admin]);
        if ok {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for line in [
        "ready       yes",
        "lag         0\n",
        "incidents   open: 0\n",
        "DLQ         none",
        "HEC backlog 0 events unsent",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    let (ok, text) = status(&[&admin, &silent]);
    assert!(!ok, "a silent process fails the status:\n{text}");
    assert!(
        text.contains(&format!("{silent}\n   error       {silent} did not answer")),
        "{text}"
    );
    drop(mesh);
}
