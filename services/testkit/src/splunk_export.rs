//! A Splunk REST export test server (`POST /services/search/v2/jobs/export`, form fields
//! `search`, `earliest_time`, `latest_time`, `output_mode=json`) serving rows from fixture
//! files: each fixture names a text its search must contain and the rows to stream back as
//! Splunk does (NDJSON `result` frames, the last with `lastrow`). Bearer token checked with
//! Splunk's 401 body; a search that starts with neither `search` nor `|` returns nothing, as
//! Splunk does; every search is recorded.

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// One fixture file: `{"matches": "<text in the SPL>", "rows": [{...}, ...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub matches: String,
    pub rows: Vec<Map<String, Value>>,
}

impl Fixture {
    /// Reads every `*.json` fixture in `dir`, in file name order.
    pub fn load_dir(dir: &Path) -> Vec<Self> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("fixture readable");
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            })
            .collect()
    }
}

/// A search as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub search: String,
    pub earliest_time: Option<String>,
    pub latest_time: Option<String>,
}

struct State {
    token: String,
    fixtures: Vec<Fixture>,
    searches: Vec<Received>,
}

#[derive(Deserialize)]
struct ExportForm {
    search: String,
    earliest_time: Option<String>,
    latest_time: Option<String>,
    output_mode: Option<String>,
}

async fn export(
    state: web::Data<Mutex<State>>,
    request: HttpRequest,
    form: web::Form<ExportForm>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let authorized = request
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", state.token));
    if !authorized {
        return HttpResponse::Unauthorized()
            .json(json!({"messages":[{"type":"WARN","text":"call not properly authenticated"}]}));
    }
    let form = form.into_inner();
    state.searches.push(Received {
        search: form.search.clone(),
        earliest_time: form.earliest_time,
        latest_time: form.latest_time,
    });
    if form.output_mode.as_deref() != Some("json") {
        return HttpResponse::BadRequest()
            .json(json!({"messages":[{"type":"ERROR","text":"output_mode must be json"}]}));
    }
    if !(form.search.starts_with("search ") || form.search.starts_with('|')) {
        return HttpResponse::Ok().content_type("application/json").body("");
    }
    let rows = state
        .fixtures
        .iter()
        .find(|f| form.search.contains(&f.matches))
        .map(|f| f.rows.clone())
        .unwrap_or_default();
    let mut body = String::new();
    for (offset, row) in rows.iter().enumerate() {
        let last = offset + 1 == rows.len();
        body.push_str(
            &json!({"preview": false, "offset": offset, "lastrow": last, "result": row})
                .to_string(),
        );
        body.push('\n');
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

pub struct SplunkExport {
    state: Arc<Mutex<State>>,
    url: String,
}

impl SplunkExport {
    /// Serves `fixtures` on a free loopback port to callers bearing `token`.
    pub async fn start(token: &str, fixtures: Vec<Fixture>) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            fixtures,
            searches: Vec::new(),
        }));
        let data = web::Data::from(state.clone());
        let url = crate::serve_on_loopback("Splunk test server", move |routes| {
            routes
                .app_data(data.clone())
                .route("/services/search/v2/jobs/export", web::post().to(export));
        });
        Self { state, url }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The splunkd management URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The searches received, in order.
    pub fn searches(&self) -> Vec<Received> {
        self.lock().searches.clone()
    }
}
