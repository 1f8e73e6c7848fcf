//! The kubelet: pods run, crash and restart with back-off, fail to pull images, get OOMKilled.

use std::time::Duration;

use serde_json::json;

use crate::{
    duration::format_duration,
    resources,
    scenario::Fault,
    world::{PodLife, SimPod, World},
};

use super::{CONTAINER, ISVC_LABEL, event, event_name, kserve::default_hourly, pod_demand};

/// How long a crashing container runs before it dies: a model OOMs while loading, a broken
/// entrypoint exits at once.
const OOM_RUN: Duration = Duration::from_secs(20);
const CRASH_RUN: Duration = Duration::from_secs(2);
const PULL_ATTEMPT: Duration = Duration::from_secs(1);
/// The storage initializer tries the download for this long before it gives up.
const LOAD_ATTEMPT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A kubelet restart loop: the container runs `run` then dies, waits a doubling back-off.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cycle {
    pub restarts: u32,
    pub crashes: u32,
    pub first_crash: Option<Duration>,
    pub last_crash: Option<Duration>,
    pub last_start: Duration,
    pub backoff: Option<Duration>,
}

impl World {
    /// The kubelet's `BackOff` event for `container` of pod `(ns, name, uid)` (`involved`)
    /// once its restart loop `c`, begun at `since`, has crashed at least once.
    pub(super) fn put_backoff_event(
        &mut self,
        (ns, pod, uid): (&str, &str, &str),
        container: &str,
        involved: serde_json::Value,
        since: Duration,
        c: &Cycle,
    ) {
        let (Some(first), Some(last)) = (c.first_crash, c.last_crash) else {
            return;
        };
        let ev = event(
            ns,
            involved,
            "BackOff",
            format!("Back-off restarting failed container {container} in pod {pod}_{ns}({uid})"),
            "Warning",
            c.crashes,
            self.ts(since + first),
            self.ts(since + last),
            "kubelet",
        );
        self.put(&resources::EVENTS, ns, &event_name(pod, "BackOff"), ev);
    }
}

pub(super) fn cycle(elapsed: Duration, run: Duration) -> Cycle {
    let mut c = Cycle::default();
    let mut t = Duration::ZERO;
    loop {
        let crash = t + run;
        if crash > elapsed {
            c.last_start = t;
            return c;
        }
        c.crashes += 1;
        c.first_crash.get_or_insert(crash);
        c.last_crash = Some(crash);
        let backoff =
            (BACKOFF_START * 2u32.saturating_pow(c.crashes - 1).min(1 << 10)).min(BACKOFF_MAX);
        if crash + backoff > elapsed {
            c.last_start = t;
            c.backoff = Some(backoff);
            return c;
        }
        t = crash + backoff;
        c.restarts += 1;
    }
}

enum Mode {
    Healthy,
    ImagePull {
        since: Duration,
    },
    /// The storage initializer fails: the storage URI holds no model.
    LoadFailure {
        since: Duration,
        uri: String,
    },
    /// A Secret or ConfigMap the container reads is missing (the kubelet's message).
    ConfigError {
        message: String,
    },
    Crash {
        since: Duration,
        oom: bool,
        exit_code: i32,
    },
}

impl World {
    /// An external write to a pod (deletion is noticed by the controller on its next pass).
    pub(crate) fn pod_written(&mut self, ns: &str, name: &str) {
        let now = self.clock.elapsed();
        let Some(pod) = self.get_obj(&resources::PODS, ns, name).cloned() else {
            if let Some(life) = self
                .pod_lives
                .iter_mut()
                .find(|l| l.namespace == ns && l.pod == name && l.end.is_none())
            {
                life.end = Some(now);
            }
            return;
        };
        if pod["metadata"]["labels"].get(ISVC_LABEL).is_some() {
            return;
        }
        if !self
            .pod_lives
            .iter()
            .any(|l| l.namespace == ns && l.pod == name && l.end.is_none())
        {
            let demand = pod_demand(&pod);
            self.pod_lives.push(PodLife {
                namespace: ns.to_owned(),
                pod: name.to_owned(),
                controller: None,
                start: now,
                end: None,
                ran_before: Duration::ZERO,
                hourly_usd: default_hourly(&demand),
                gpu: demand.gpu as u32,
                memory_bytes: demand.memory_request,
            });
            let mut pod = pod;
            pod["status"] = json!({"phase": "Running", "startTime": self.ts(now), "conditions": [{"type": "Ready", "status": "True"}]});
            self.put(&resources::PODS, ns, name, pod);
        }
    }

    fn mode_of(&self, ns: &str, isvc: &str, pod: &SimPod) -> Mode {
        if self
            .bad_images
            .contains(&(ns.to_owned(), isvc.to_owned(), pod.image.clone()))
        {
            return Mode::ImagePull { since: pod.created };
        }
        if let Some(uri) = self
            .get_obj(&resources::PODS, ns, &pod.name)
            .and_then(|obj| self.missing_model(ns, isvc, obj))
        {
            return Mode::LoadFailure {
                since: pod.created,
                uri,
            };
        }
        if let Some(message) = self
            .get_obj(&resources::PODS, ns, &pod.name)
            .and_then(|obj| self.missing_config(ns, obj))
        {
            return Mode::ConfigError { message };
        }
        for f in &self.faults {
            if !f.applied || !f.targets_isvc(ns, isvc) {
                continue;
            }
            match &f.fault {
                Fault::CrashLoop {
                    persistent,
                    exit_code,
                } if (*persistent && f.crashing_image.as_ref().is_none_or(|i| *i == pod.image))
                    || (!*persistent && f.cleared_at.is_none_or(|c| pod.created < c)) =>
                {
                    return Mode::Crash {
                        since: pod.created.max(f.at),
                        oom: false,
                        exit_code: *exit_code,
                    };
                }
                Fault::OomLoop { memory_demand }
                    if pod.memory_limit.is_some_and(|l| l < *memory_demand) =>
                {
                    return Mode::Crash {
                        since: pod.created.max(f.at),
                        oom: true,
                        exit_code: 137,
                    };
                }
                _ => {}
            }
        }
        Mode::Healthy
    }

    /// Writes the pod's status and its kubelet events; returns (ready, why not).
    pub(super) fn update_pod(
        &mut self,
        ns: &str,
        isvc: &str,
        pod: &SimPod,
        now: Duration,
    ) -> (bool, Option<String>) {
        let Some(mut obj) = self.get_obj(&resources::PODS, ns, &pod.name).cloned() else {
            return (false, None);
        };
        if let Some(message) = self.schedule(ns, &mut obj, pod.life, pod.created, now) {
            self.put(&resources::PODS, ns, &pod.name, obj);
            return (false, Some(format!("Unschedulable: {message}")));
        }
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let involved = json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name, "namespace": ns, "uid": uid, "fieldPath": format!("spec.containers{{{CONTAINER}}}")});
        let startup = self.config.pod_startup;
        let mut initializer = None;
        let (phase, ready, restarts, state, last_state, reason) = match self.mode_of(ns, isvc, pod)
        {
            Mode::Healthy => {
                let ready = now.saturating_sub(pod.created) >= startup;
                (
                    "Running",
                    ready,
                    0,
                    json!({"running": {"startedAt": self.ts(pod.created)}}),
                    json!({}),
                    (!ready).then(|| "predictor starting".to_owned()),
                )
            }
            Mode::ImagePull { since } => {
                let c = cycle(now.saturating_sub(since), PULL_ATTEMPT);
                let attempts = c.crashes.max(1);
                let first = self.ts(since);
                let last = self.ts(since + c.last_crash.unwrap_or_default());
                let failed = event(
                    ns,
                    involved.clone(),
                    "Failed",
                    format!(
                        "Failed to pull image {:?}: rpc error: code = NotFound desc = failed to pull and unpack image {:?}: not found",
                        pod.image, pod.image
                    ),
                    "Warning",
                    attempts,
                    first.clone(),
                    last.clone(),
                    "kubelet",
                );
                self.put(
                    &resources::EVENTS,
                    ns,
                    &event_name(&pod.name, "Failed"),
                    failed,
                );
                let backoff = event(
                    ns,
                    involved.clone(),
                    "BackOff",
                    format!("Back-off pulling image {:?}", pod.image),
                    "Warning",
                    attempts,
                    first,
                    last,
                    "kubelet",
                );
                self.put(
                    &resources::EVENTS,
                    ns,
                    &event_name(&pod.name, "BackOff"),
                    backoff,
                );
                (
                    "Pending",
                    false,
                    0,
                    json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image {:?}", pod.image)}}),
                    json!({}),
                    Some("ImagePullBackOff".to_owned()),
                )
            }
            Mode::LoadFailure { since, uri } => {
                let c = cycle(now.saturating_sub(since), LOAD_ATTEMPT);
                initializer =
                    Some(self.initializer_failure((ns, &pod.name, &uid), since, &c, &uri));
                (
                    "Pending",
                    false,
                    0,
                    json!({"waiting": {"reason": "PodInitializing"}}),
                    json!({}),
                    Some(format!(
                        "{} exited with code 1: {}",
                        opsmesh_proto::storage::STORAGE_INITIALIZER,
                        super::storage::fetch_error(&uri)
                    )),
                )
            }
            Mode::ConfigError { message } => {
                let state = self.config_error(ns, &pod.name, &involved, pod.created, &message, now);
                (
                    "Pending",
                    false,
                    0,
                    state,
                    json!({}),
                    Some(format!("CreateContainerConfigError: {message}")),
                )
            }
            Mode::Crash {
                since,
                oom,
                exit_code,
            } => {
                let c = cycle(
                    now.saturating_sub(since),
                    if oom { OOM_RUN } else { CRASH_RUN },
                );
                let reason = if oom { "OOMKilled" } else { "Error" };
                let last_state = match c.last_crash {
                    Some(crash) => json!({"terminated": {
                        "reason": reason,
                        "exitCode": exit_code,
                        "startedAt": self.ts(since + c.last_start),
                        "finishedAt": self.ts(since + crash),
                        "containerID": format!("containerd://{}", &uid.replace('-', "")),
                    }}),
                    None => json!({}),
                };
                let state = match c.backoff {
                    Some(b) => {
                        json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {} restarting failed container={CONTAINER} pod={}_{ns}({uid})", format_duration(b), pod.name)}})
                    }
                    None => json!({"running": {"startedAt": self.ts(since + c.last_start)}}),
                };
                self.put_backoff_event(
                    (ns, &pod.name, &uid),
                    CONTAINER,
                    involved.clone(),
                    since,
                    &c,
                );
                let why = if c.crashes == 0 {
                    "predictor starting".to_owned()
                } else if oom {
                    format!("container {CONTAINER} OOMKilled (exit code 137), CrashLoopBackOff")
                } else {
                    format!("container {CONTAINER} exited with code {exit_code}, CrashLoopBackOff")
                };
                ("Running", false, c.restarts, state, last_state, Some(why))
            }
        };
        let cond =
            |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }});
        obj["status"] = json!({
            "phase": phase,
            "hostIP": "10.0.0.11",
            "podIP": format!("10.244.0.{}", (pod.life % 250) + 2),
            "startTime": self.ts(pod.created),
            "qosClass": "Burstable",
            "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": [{
                "name": CONTAINER,
                "image": pod.image,
                "imageID": if phase == "Pending" { String::new() } else { format!("{}@sha256:{}", pod.image.split(':').next().unwrap_or(""), "0".repeat(64)) },
                "ready": ready,
                "started": phase == "Running" && state.get("running").is_some(),
                "restartCount": restarts,
                "state": state,
                "lastState": last_state,
            }],
        });
        if let Some(statuses) = initializer {
            obj["status"]["initContainerStatuses"] = statuses;
            obj["status"]["conditions"][1] = json!({"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"});
        }
        self.put(&resources::PODS, ns, &pod.name, obj);
        self.write_pod_metrics(
            ns,
            isvc,
            pod,
            phase == "Running" && state.get("running").is_some(),
            now,
        );
        (ready, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_backoff() {
        let c = cycle(Duration::from_secs(300), OOM_RUN);
        // crash at 20 (+10), 50 (+20), 90 (+40), 150 (+80), 250 (+160 > 300)
        assert_eq!(c.crashes, 5);
        assert_eq!(c.restarts, 4);
        assert!(c.backoff.is_some());
        assert_eq!(cycle(Duration::from_secs(5), OOM_RUN).crashes, 0);
    }
}
