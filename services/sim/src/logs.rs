//! Container logs (`GET /api/v1/namespaces/{ns}/pods/{name}/log`) as kube-apiserver and the
//! kubelet serve them: the container is checked against the pod's spec, the run is chosen from
//! its status as the kubelet does (`previous`: the last terminated one), and the text is
//! filtered by `sinceSeconds`, then `tailLines`, then cut at `limitBytes`. `follow` is not
//! honoured: the body is what was printed by now, and the stream ends.
//!
//! What a container prints is data: a script per (container, how the run ends) — a model
//! server that loads and serves, one OOM-killed while loading its weights, one crashing with
//! a traceback, a storage initializer that finds no model at its URI — filled in from the pod
//! (its model, storage URI, termination message) and timed from the run's start.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use opsmesh_proto::storage::{MODEL_CONTAINER, SOURCE_URI_ANNOTATION, STORAGE_INITIALIZER};

use crate::{controller::ISVC_LABEL, resources, status::ApiError, world::World};

/// How a container's run ends (or goes on), as its status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Running, or exited 0.
    Fine,
    OomKilled,
    Error,
}

type Script = &'static [(u64, &'static str)];

const MODEL_SERVING: Script = &[
    (0, "INFO kserve: Loading model {model} from /mnt/models"),
    (
        1,
        "INFO vllm.config: Using max_model_len 8192, dtype bfloat16",
    ),
    (
        2,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:   0% Completed | 0/4",
    ),
    (
        3,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:  25% Completed | 1/4",
    ),
    (
        4,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:  50% Completed | 2/4",
    ),
    (
        5,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:  75% Completed | 3/4",
    ),
    (
        6,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards: 100% Completed | 4/4",
    ),
    (
        7,
        "INFO vllm.worker.model_runner: Loading model weights took 0.45 GiB",
    ),
    (
        8,
        "INFO uvicorn.error: Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)",
    ),
    (9, "INFO uvicorn.error: Application startup complete."),
    (10, "INFO kserve: Model {model} is ready"),
];

/// The weights do not fit the memory limit: the kernel kills the process mid-load, so the log
/// just stops.
const MODEL_OOM_KILLED: Script = &[
    (0, "INFO kserve: Loading model {model} from /mnt/models"),
    (
        1,
        "INFO vllm.config: Using max_model_len 8192, dtype bfloat16",
    ),
    (
        2,
        "INFO vllm.worker.model_runner: Starting to load model /mnt/models ...",
    ),
    (
        4,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:   0% Completed | 0/4",
    ),
    (
        9,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:  25% Completed | 1/4",
    ),
    (
        14,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:  50% Completed | 2/4",
    ),
    (
        19,
        "INFO vllm.model_executor.model_loader: Loading safetensors checkpoint shards:  75% Completed | 3/4",
    ),
];

const MODEL_CRASHED: Script = &[
    (0, "INFO kserve: Loading model {model} from /mnt/models"),
    (1, "Traceback (most recent call last):"),
    (
        1,
        "  File \"/kserve/huggingfaceserver/__main__.py\", line 312, in <module>",
    ),
    (1, "    model.load()"),
    (
        1,
        "  File \"/kserve/huggingfaceserver/vllm/vllm_model.py\", line 58, in load",
    ),
    (
        1,
        "    self.engine_client = build_async_engine_client(self.engine_args)",
    ),
    (
        1,
        "RuntimeError: Engine core initialization failed. See root cause above.",
    ),
    (2, "ERROR kserve: model server exited with code {exit_code}"),
];

const INITIALIZER_DONE: Script = &[
    (
        0,
        "INFO:root:Initializing, args: src_uri [{uri}] dest_path[ [/mnt/models]",
    ),
    (0, "INFO:kserve.storage:Copying contents of {uri} to local"),
    (
        1,
        "INFO:kserve.storage:Successfully copied {uri} to /mnt/models",
    ),
];

const INITIALIZER_FAILED: Script = &[
    (
        0,
        "INFO:root:Initializing, args: src_uri [{uri}] dest_path[ [/mnt/models]",
    ),
    (0, "INFO:kserve.storage:Copying contents of {uri} to local"),
    (4, "Traceback (most recent call last):"),
    (
        4,
        "  File \"/storage-initializer/scripts/initializer-entrypoint\", line 31, in <module>",
    ),
    (4, "    kserve.storage.Storage.download(src_uri, dest_path)"),
    (
        4,
        "  File \"/kserve/kserve/storage/storage.py\", line 94, in download",
    ),
    (
        4,
        "    raise RuntimeError(\"Failed to fetch model. No model found in %s.\" % uri)",
    ),
    (5, "{message}"),
];

/// The script of each (container, ending); other containers print nothing.
const SCRIPTS: &[(&str, Ending, Script)] = &[
    (MODEL_CONTAINER, Ending::Fine, MODEL_SERVING),
    (MODEL_CONTAINER, Ending::OomKilled, MODEL_OOM_KILLED),
    (MODEL_CONTAINER, Ending::Error, MODEL_CRASHED),
    (STORAGE_INITIALIZER, Ending::Fine, INITIALIZER_DONE),
    (STORAGE_INITIALIZER, Ending::Error, INITIALIZER_FAILED),
];

/// The query of a log request, checked as kube-apiserver checks `PodLogOptions`.
#[derive(Debug, Default)]
struct LogOptions {
    container: Option<String>,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    since_seconds: Option<i64>,
}

/// Go's `strconv.ParseBool`, which the query decoder uses.
fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{key}: strconv.ParseBool: parsing {value:?}: invalid syntax"
        ))),
    }
}

fn parse_int(key: &str, value: &str) -> Result<i64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{key}: strconv.ParseInt: parsing {value:?}: invalid syntax"
        ))
    })
}

/// `422 Invalid` for `PodLogOptions` (not a stored kind, so not in the resource table).
fn invalid(pod: &str, field: &str, problem: String) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("PodLogOptions {pod:?} is invalid: {field}: {problem}"),
    );
    e.details = json!({"name": pod, "kind": "PodLogOptions",
        "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": field}]});
    e
}

impl LogOptions {
    fn parse(pod: &str, query: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let int = |key: &str| query.get(key).map(|v| parse_int(key, v)).transpose();
        let flag = |key: &str| query.get(key).map_or(Ok(false), |v| parse_bool(key, v));
        let options = Self {
            container: query.get("container").filter(|c| !c.is_empty()).cloned(),
            previous: flag("previous")?,
            timestamps: flag("timestamps")?,
            tail_lines: int("tailLines")?,
            limit_bytes: int("limitBytes")?,
            since_seconds: int("sinceSeconds")?,
        };
        if let Some(n) = options.tail_lines.filter(|n| *n < 0) {
            return Err(invalid(
                pod,
                "tailLines",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
        for (field, value) in [
            ("limitBytes", options.limit_bytes),
            ("sinceSeconds", options.since_seconds),
        ] {
            if let Some(n) = value.filter(|n| *n < 1) {
                return Err(invalid(
                    pod,
                    field,
                    format!("Invalid value: {n}: must be greater than 0"),
                ));
            }
        }
        if options.since_seconds.is_some() && query.contains_key("sinceTime") {
            return Err(invalid(
                pod,
                "sinceSeconds",
                "Forbidden: at most one of sinceTime or sinceSeconds may be specified".into(),
            ));
        }
        Ok(options)
    }
}

/// One run of a container: when it started, when it ended, how.
struct Run {
    started: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
    ending: Ending,
    exit_code: i64,
    message: String,
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn terminated_run(terminated: &Value) -> Option<Run> {
    Some(Run {
        started: time(&terminated["startedAt"])?,
        ended: time(&terminated["finishedAt"]),
        ending: match terminated["reason"].as_str() {
            Some("OOMKilled") => Ending::OomKilled,
            _ if terminated["exitCode"].as_i64() == Some(0) => Ending::Fine,
            _ => Ending::Error,
        },
        exit_code: terminated["exitCode"].as_i64().unwrap_or_default(),
        message: terminated["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// The kubelet's choice of run (`validateContainerLogStatus`), or its refusal.
fn chosen_run(status: &Value, container: &str, pod: &str, previous: bool) -> Result<Run, String> {
    let state = &status["state"];
    let last = status["lastState"]
        .get("terminated")
        .filter(|t| t["containerID"].as_str().is_some_and(|id| !id.is_empty()));
    let unreadable = || format!("container {container:?} in pod {pod:?} is terminated");
    if previous {
        return last.and_then(terminated_run).ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        });
    }
    if let Some(running) = state.get("running") {
        // A container restarted after a crash goes the way its last run went.
        let ending = last
            .and_then(terminated_run)
            .map_or(Ending::Fine, |r| r.ending);
        return Ok(Run {
            started: time(&running["startedAt"]).ok_or_else(unreadable)?,
            ended: None,
            ending,
            exit_code: 0,
            message: String::new(),
        });
    }
    if let Some(terminated) = state.get("terminated") {
        return terminated_run(terminated)
            .or_else(|| last.and_then(terminated_run))
            .ok_or_else(unreadable);
    }
    if let Some(last) = last {
        return terminated_run(last).ok_or_else(unreadable);
    }
    Err(match state["waiting"]["reason"].as_str() {
        Some("ErrImagePull") => {
            format!(
                "container {container:?} in pod {pod:?} is waiting to start: image can't be pulled"
            )
        }
        Some("ImagePullBackOff") => format!(
            "container {container:?} in pod {pod:?} is waiting to start: trying and failing to pull image"
        ),
        Some(reason) => {
            format!("container {container:?} in pod {pod:?} is waiting to start: {reason}")
        }
        None => format!("container {container:?} in pod {pod:?} is waiting to start - no logs yet"),
    })
}

/// Names of the pod's containers, init containers first (`podutil.VisitContainers`).
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// The container the request reads (`ValidateContainer`).
fn validated_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let all = container_names(pod);
    match asked {
        Some(asked) if all.iter().any(|c| c == asked) => Ok(asked.to_owned()),
        Some(asked) => Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        ))),
        None => match pod["spec"]["containers"].as_array().map(Vec::as_slice) {
            Some([only]) => Ok(only["name"].as_str().unwrap_or_default().to_owned()),
            Some([]) | None => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            Some(_) => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// The lines `run` of `container` printed by `now`, timestamped, with the pod's values in.
fn printed(
    pod: &Value,
    container: &str,
    run: &Run,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, String)> {
    let Some((_, _, script)) = SCRIPTS
        .iter()
        .find(|(c, ending, _)| *c == container && *ending == run.ending)
    else {
        return Vec::new();
    };
    let model = pod["metadata"]["labels"][ISVC_LABEL]
        .as_str()
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or_default();
    let uri = pod["metadata"]["annotations"][SOURCE_URI_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    let until = run.ended.unwrap_or(now).min(now);
    script
        .iter()
        .map(|(at, text)| (run.started + chrono::Duration::seconds(*at as i64), text))
        .take_while(|(t, _)| *t <= until)
        .map(|(t, text)| {
            let line = text
                .replace("{model}", model)
                .replace("{uri}", uri)
                .replace("{message}", &run.message)
                .replace("{exit_code}", &run.exit_code.to_string());
            (t, line)
        })
        .collect()
}

impl World {
    /// The log text of a container of pod `ns/name`, as `query` asks; errors as the API server
    /// answers them.
    pub fn pod_log(
        &mut self,
        ns: &str,
        name: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, ApiError> {
        self.reconcile();
        let options = LogOptions::parse(name, query)?;
        let pod = self
            .get_obj(&resources::PODS, ns, name)
            .ok_or_else(|| ApiError::not_found(&resources::PODS, name))?;
        let container = validated_container(pod, name, options.container.as_deref())?;
        // A pod not bound to a node has no kubelet to ask: the API server streams nothing.
        if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            return Ok(Vec::new());
        }
        let status = ["containerStatuses", "initContainerStatuses"]
            .iter()
            .flat_map(|list| pod["status"][list].as_array().into_iter().flatten())
            .find(|s| s["name"] == container.as_str())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "container {container:?} in pod {name:?} is not available"
                ))
            })?;
        let run = chosen_run(status, &container, name, options.previous)
            .map_err(ApiError::bad_request)?;
        let now = self.clock.now();
        let mut lines = printed(pod, &container, &run, now);
        if let Some(since) = options.since_seconds {
            let from = now - chrono::Duration::seconds(since);
            lines.retain(|(t, _)| *t >= from);
        }
        if let Some(tail) = options.tail_lines {
            let skip = lines.len().saturating_sub(tail as usize);
            lines.drain(..skip);
        }
        let mut body = Vec::new();
        for (t, line) in lines {
            if options.timestamps {
                body.extend_from_slice(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                        .as_bytes(),
                );
                body.push(b' ');
            }
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        if let Some(limit) = options.limit_bytes {
            body.truncate(limit as usize);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_in_time_order() {
        for (container, ending, script) in SCRIPTS {
            assert!(
                script.windows(2).all(|w| w[0].0 <= w[1].0),
                "{container} {ending:?}"
            );
        }
    }
}
