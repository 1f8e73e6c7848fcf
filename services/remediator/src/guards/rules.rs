//! The rules both stages apply (memory raised and under the ceiling, replicas above the floor
//! and within the blast radius) and the param readers they share.

use std::collections::BTreeMap;

use serde_json::Value;

use opsmesh_proto::quantity::parse_bytes;

use crate::config::PolicyConfig;

use super::{Guard, GuardViolation};

/// Reads a quantity param: `None` when absent or null, an error when garbled.
pub(super) fn quantity(
    params: &BTreeMap<String, Value>,
    name: &str,
    guard: Guard,
) -> Result<Option<(String, u64)>, GuardViolation> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match parse_bytes(s) {
            Ok(b) => Ok(Some((s.clone(), b))),
            Err(_) => Err(GuardViolation::Unverifiable {
                guard,
                what: format!("{name} {s:?} is not a memory quantity"),
            }),
        },
        Some(other) => Err(GuardViolation::Unverifiable {
            guard,
            what: format!("{name} {other} is not a memory quantity"),
        }),
    }
}

pub(super) fn count(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str()?.trim().parse().ok())
}

pub(super) fn count_param(
    params: &BTreeMap<String, Value>,
    name: &str,
    guard: Guard,
) -> Result<Option<u64>, GuardViolation> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => count(v)
            .map(Some)
            .ok_or_else(|| GuardViolation::Unverifiable {
                guard,
                what: format!("{name} {v} is not a count"),
            }),
    }
}

pub(super) fn required<T>(value: Option<T>, guard: Guard, what: &str) -> Result<T, GuardViolation> {
    value.ok_or_else(|| GuardViolation::Unverifiable {
        guard,
        what: what.to_owned(),
    })
}

pub(super) fn not_lowered(
    new: &(String, u64),
    current: &(String, u64),
) -> Result<(), GuardViolation> {
    if new.1 > current.1 {
        return Ok(());
    }
    Err(GuardViolation::MemoryLowered {
        new: new.0.clone(),
        current: current.0.clone(),
        relation: if new.1 == current.1 {
            "equal to"
        } else {
            "below"
        },
    })
}

pub(super) fn below_ceiling(
    new: &(String, u64),
    policy: &PolicyConfig,
) -> Result<(), GuardViolation> {
    let ceiling = parse_bytes(&policy.memory_ceiling).unwrap_or(u64::MAX);
    if new.1 > ceiling {
        return Err(GuardViolation::MemoryAboveCeiling {
            new: new.0.clone(),
            ceiling: policy.memory_ceiling.clone(),
        });
    }
    Ok(())
}

pub(super) fn above_floor(replicas: u64, policy: &PolicyConfig) -> Result<(), GuardViolation> {
    if replicas < u64::from(policy.replica_floor) {
        return Err(GuardViolation::BelowReplicaFloor {
            replicas,
            floor: policy.replica_floor,
        });
    }
    Ok(())
}

pub(super) fn within_blast_radius(
    current: u64,
    replicas: u64,
    policy: &PolicyConfig,
) -> Result<(), GuardViolation> {
    if current == 0 || replicas >= current {
        return Ok(());
    }
    let share = (current - replicas) as f64 / current as f64;
    // The tolerance keeps a reduction of exactly the allowed share (e.g. 8 → 2 at 0.75) legal.
    if share > policy.max_replica_reduction + 1e-9 {
        return Err(GuardViolation::BlastRadius {
            current,
            replicas,
            share,
            allowed: policy.max_replica_reduction,
        });
    }
    Ok(())
}

/// `raise_max_replicas`'s bound: present, and at or below the policy's ceiling.
pub(super) fn new_max_replicas(
    params: &BTreeMap<String, Value>,
    policy: &PolicyConfig,
) -> Result<u64, GuardViolation> {
    let new = required(
        count_param(params, "max_replicas", Guard::MaxReplicasCeiling)?,
        Guard::MaxReplicasCeiling,
        "the new max_replicas is missing",
    )?;
    if new > u64::from(policy.max_replicas_ceiling) {
        return Err(GuardViolation::MaxReplicasAboveCeiling {
            new,
            ceiling: policy.max_replicas_ceiling,
        });
    }
    Ok(new)
}

/// `raise_max_replicas` against the current bound and, when the namespace has a pod quota,
/// its headroom: the autoscaler may add up to `new - current` pods.
pub(super) fn max_replicas_raise_fits(
    new: u64,
    current: u64,
    headroom: Option<u64>,
) -> Result<(), GuardViolation> {
    if new <= current {
        return Err(GuardViolation::MaxReplicasNotRaised { new, current });
    }
    match headroom {
        Some(headroom) if new - current > headroom => Err(GuardViolation::MaxReplicasAboveQuota {
            new,
            current,
            headroom,
        }),
        _ => Ok(()),
    }
}
