//! Talking to the console over HTTP as a browser would: sign in, read cookies and CSRF tokens.

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, redirect::Policy};

/// A client that does not follow redirects (the tests look at them).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of the `Set-Cookie` named `name`.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The first CSRF token of a page (the decision form's, or the sign-out form's).
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("page has a CSRF field") + marker.len();
    page[start..start + 64].to_owned()
}

/// Signs in at `base` with `token`; the session cookie (`opsmesh_session=…`).
pub async fn sign_in(base: &str, token: &str) -> String {
    let response = client()
        .post(format!("{base}/console/login"))
        .header("Origin", base)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    set_cookie(&response, "opsmesh_session").expect("a session cookie")
}

/// GET `url` with `cookie`: the status and the page.
pub async fn get_page(url: &str, cookie: &str) -> (StatusCode, String) {
    let response = client()
        .get(url)
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// Writes the users (or MCP tokens) file `name` under `dir`.
pub fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A reporter on `bus` serving the console to the one user `user` (`name:token:role`), and
/// the directory holding its users file (kept as long as the reporter runs).
pub async fn console_reporter(
    bus: &super::MemoryBus,
    hec: &super::HecServer,
    user: &str,
) -> (super::RunningReporter, tempfile::TempDir) {
    console_reporter_for(bus, hec, &[user.to_owned()], &[]).await
}

/// As [`console_reporter`], for several `users` and with `extra` `OPSMESH__…` variables.
pub async fn console_reporter_for(
    bus: &super::MemoryBus,
    hec: &super::HecServer,
    users: &[String],
    extra: &[(&str, &str)],
) -> (super::RunningReporter, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let users = write_lines(dir.path(), "users", users);
    let users = users.display().to_string();
    let reporter = super::RunningReporter::start(
        bus,
        hec,
        &[
            ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true"),
            ("OPSMESH__REPORTER__CONSOLE__USERS_FILE", users.as_str()),
            ("OPSMESH__REPORTER__CONSOLE__COOKIE_SECURE", "false"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    )
    .await;
    (reporter, dir)
}
