//! OpenCost's allocation API: `GET /allocation/compute?window=…&aggregate=namespace|pod|controller
//! &step=…&accumulate=true|false`, computed from the lives of the simulated pods and their
//! prices on the virtual clock; the initial state's pods ran before it began (history).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{clock::timestamp, duration::parse_duration, world::World};

#[derive(Default)]
struct Acc {
    namespace: String,
    pod: Option<String>,
    controller: Option<String>,
    minutes: f64,
    cpu: f64,
    gpu: f64,
    ram: f64,
    gpu_hours: f64,
    ram_byte_hours: f64,
}

/// Parses an OpenCost window relative to now: `10m`, `1h`, `24h`, `7d`, `today`, or
/// `<start>,<end>` (RFC 3339 or unix seconds). It may reach before the simulation began (the
/// initial state's history).
fn window(text: &str, world: &World) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let now = world.clock.now();
    if text == "today" {
        let midnight = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc();
        return Ok((midnight, now));
    }
    if let Some((a, b)) = text.split_once(',') {
        let parse = |s: &str| -> Result<DateTime<Utc>, String> {
            if let Ok(secs) = s.trim().parse::<i64>() {
                return DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("bad time {s:?}"));
            }
            DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("bad time {s:?}: {e}"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if b <= a {
            return Err("window end must be after its start".into());
        }
        return Ok((a, b));
    }
    let d = parse_duration(text).map_err(|_| {
        format!("invalid window {text:?}: use 10m, 1h, 24h, 7d, today or start,end")
    })?;
    Ok((now - chrono::Duration::from_std(d).unwrap_or_default(), now))
}

/// Whether `accumulate` sums the steps into one set: `true`/`false`, as OpenCost takes it.
fn accumulate(query: &BTreeMap<String, String>) -> Result<bool, String> {
    match query.get("accumulate").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!(
            "invalid accumulate {other:?}: the simulator supports true and false"
        )),
    }
}

/// The JSON OpenCost answers (status code, body): one allocation set per `step` of the window
/// (the whole window without a step), or one set summing them with `accumulate=true`.
pub fn allocation(world: &mut World, query: &BTreeMap<String, String>) -> (u16, Value) {
    world.reconcile();
    let bad = |m: String| (400, json!({"code": 400, "status": "error", "message": m}));
    let Some(w) = query.get("window") else {
        return bad("missing required parameter: window".into());
    };
    let (start, end) = match window(w, world) {
        Ok(x) => x,
        Err(e) => return bad(e),
    };
    let aggregate = query.get("aggregate").map(String::as_str).unwrap_or("pod");
    if !matches!(aggregate, "namespace" | "pod" | "controller") {
        return bad(format!(
            "invalid aggregate {aggregate:?}: the simulator supports namespace, pod and controller"
        ));
    }
    let accumulate = match accumulate(query) {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    let step = match query.get("step").map(|s| parse_duration(s)) {
        None => end - start,
        Some(Ok(d)) if !d.is_zero() => chrono::Duration::from_std(d).unwrap_or_default(),
        Some(_) => return bad(format!("invalid step {:?}: use 10m, 1h, 1d", query["step"])),
    };
    if (end - start).num_seconds() / step.num_seconds().max(1) > MAX_STEPS {
        return bad(format!("window {w:?} has more than {MAX_STEPS} steps"));
    }
    let filter: Option<Vec<String>> = query
        .get("filterNamespaces")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .or_else(|| {
            query.get("filter").and_then(|f| {
                f.strip_prefix("namespace:").map(|v| {
                    v.split(',')
                        .map(|s| s.trim_matches('"').to_owned())
                        .collect()
                })
            })
        });
    let steps: Vec<(DateTime<Utc>, DateTime<Utc>)> = if accumulate {
        vec![(start, end)]
    } else {
        let mut out = Vec::new();
        let mut from = start;
        while from < end {
            let to = (from + step).min(end);
            out.push((from, to));
            from = to;
        }
        out
    };
    let sets: Vec<Value> = steps
        .into_iter()
        .map(|(from, to)| Value::Object(set(world, aggregate, filter.as_deref(), from, to)))
        .collect();
    (200, json!({"code": 200, "status": "success", "data": sets}))
}

/// Most sets one query may ask for.
const MAX_STEPS: i64 = 1000;

/// The allocations of one set: what each pod (namespace, controller) cost in `[start, end)`.
fn set(
    world: &World,
    aggregate: &str,
    filter: Option<&[String]>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> serde_json::Map<String, Value> {
    let now = world.clock.now();
    let mut sets: BTreeMap<String, Acc> = BTreeMap::new();
    for life in &world.pod_lives {
        if filter.is_some_and(|f| !f.contains(&life.namespace)) {
            continue;
        }
        let began = world.clock.at(life.start)
            - chrono::Duration::from_std(life.ran_before).unwrap_or_default();
        let ended = life.end.map_or(now, |e| world.clock.at(e));
        let from = began.max(start);
        let to = ended.min(end).min(now);
        if to <= from {
            continue;
        }
        let seconds = (to - from).num_milliseconds() as f64 / 1000.0;
        let hours = seconds / 3600.0;
        let cost = life.hourly_usd * hours;
        let (gpu_share, cpu_share) = if life.gpu > 0 {
            (0.85, 0.10)
        } else {
            (0.0, 0.70)
        };
        let key = match aggregate {
            "namespace" => life.namespace.clone(),
            "controller" => format!(
                "{}/{}",
                life.namespace,
                life.controller
                    .clone()
                    .unwrap_or_else(|| "__unallocated__".into())
            ),
            _ => life.pod.clone(),
        };
        let acc = sets.entry(key).or_insert_with(|| Acc {
            namespace: life.namespace.clone(),
            pod: (aggregate == "pod").then(|| life.pod.clone()),
            controller: life.controller.clone(),
            ..Acc::default()
        });
        acc.minutes = acc.minutes.max(seconds / 60.0);
        acc.gpu += cost * gpu_share;
        acc.cpu += cost * cpu_share;
        acc.ram += cost * (1.0 - gpu_share - cpu_share);
        acc.gpu_hours += f64::from(life.gpu) * hours;
        acc.ram_byte_hours += life.memory_bytes as f64 * hours;
    }
    let start_ts = timestamp(start);
    let end_ts = timestamp(end);
    let round = |v: f64| (v * 1e5).round() / 1e5;
    let window_hours = (end - start).num_seconds() as f64 / 3600.0;
    let mut set = serde_json::Map::new();
    for (key, a) in sets {
        let total = a.cpu + a.gpu + a.ram;
        let mut props = json!({"cluster": world.config.cluster, "node": "sim-node-1", "namespace": a.namespace});
        if let Some(p) = &a.pod {
            props["pod"] = json!(p);
        }
        if let Some(c) = &a.controller
            && aggregate != "namespace"
        {
            props["controller"] = json!(format!("{c}-predictor"));
            props["controllerKind"] = json!("deployment");
        }
        set.insert(
            key.clone(),
            json!({
                "name": key,
                "properties": props,
                "window": {"start": start_ts, "end": end_ts},
                "start": start_ts,
                "end": end_ts,
                "minutes": round(a.minutes),
                "cpuCores": 0,
                "cpuCoreHours": 0,
                "cpuCost": round(a.cpu),
                "cpuCostAdjustment": 0,
                "gpuCount": if window_hours > 0.0 { round(a.gpu_hours / window_hours) } else { 0.0 },
                "gpuHours": round(a.gpu_hours),
                "gpuCost": round(a.gpu),
                "gpuCostAdjustment": 0,
                "ramBytes": if window_hours > 0.0 { round(a.ram_byte_hours / window_hours) } else { 0.0 },
                "ramByteHours": round(a.ram_byte_hours),
                "ramCost": round(a.ram),
                "ramCostAdjustment": 0,
                "pvCost": 0,
                "networkCost": 0,
                "loadBalancerCost": 0,
                "sharedCost": 0,
                "externalCost": 0,
                "totalCost": round(total),
                "totalEfficiency": 0,
            }),
        );
    }
    set
}
