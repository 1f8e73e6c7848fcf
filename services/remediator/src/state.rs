//! The per-incident state machine. Every ledger record moves the incident along one edge of
//! this graph; [`transition`] is the only way to compute the next state and refuses every
//! edge not drawn here, so an illegal sequence cannot be recorded.
//!
//! ```text
//! (start) → received → planned ─┬→ awaiting_approval ─┬→ executing → verifying ─┬→ resolved
//!              │          │     │        │            └→ refused / escalated    ├→ rolled_back → escalated
//!              │          │     ├→ executing          (rejected / expired)      ├→ executing (next action)
//!              │          │     ├→ dry_run                                      └→ escalated
//!              │          │     ├→ advised · escalated · refused
//!              └→ refused · no_action · escalated
//! ```

use opsmesh_proto::IncidentState::{self, *};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub to: IncidentState,
}

/// The next state, when `from → to` is an edge of the state machine.
pub fn transition(
    from: Option<IncidentState>,
    to: IncidentState,
) -> Result<IncidentState, IllegalTransition> {
    let legal = match from {
        None => matches!(to, Received),
        Some(Received) => matches!(to, Planned | Refused | NoAction | Escalated),
        // Several actions are planned one record each; a dry run of each is its own record.
        Some(Planned) => matches!(
            to,
            Planned | AwaitingApproval | Executing | DryRun | Advised | Escalated | Refused
        ),
        // One proposal (and one approval) per action; rejection refuses, expiry escalates.
        Some(AwaitingApproval) => matches!(to, AwaitingApproval | Executing | Refused | Escalated),
        // The intent is recorded, then the result; a failed call escalates.
        Some(Executing) => matches!(to, Verifying | Escalated),
        // The next action of the plan, or the verdict of the health checks.
        Some(Verifying) => matches!(to, Executing | Resolved | RolledBack | Escalated),
        // One rollback record per undone action, then humans are told.
        Some(RolledBack) => matches!(to, RolledBack | Escalated),
        Some(DryRun) => matches!(to, DryRun),
        Some(Resolved | Escalated | Refused | Advised | NoAction) => false,
    };
    if legal {
        Ok(to)
    } else {
        Err(IllegalTransition {
            from: from.map_or("(start)", |s| s.into()),
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn the_happy_paths_are_legal() {
        let paths: &[&[IncidentState]] = &[
            &[Received, Planned, Executing, Verifying, Resolved],
            &[
                Received, Planned, Planned, Executing, Verifying, Executing, Verifying, Resolved,
            ],
            &[
                Received,
                Planned,
                AwaitingApproval,
                AwaitingApproval,
                Executing,
                Verifying,
                RolledBack,
                Escalated,
            ],
            &[Received, Planned, DryRun],
            &[Received, Planned, Advised],
            &[Received, NoAction],
            &[Received, Refused],
            &[Received, Planned, AwaitingApproval, Escalated],
            // A check failing just before the first action runs (auto, or once approved).
            &[Received, Planned, Refused],
            &[
                Received,
                Planned,
                AwaitingApproval,
                AwaitingApproval,
                Refused,
            ],
        ];
        for path in paths {
            let mut state = None;
            for next in *path {
                state = Some(transition(state, *next).unwrap_or_else(|e| panic!("{path:?}: {e}")));
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out_and_nothing_skips_the_plan() {
        for &s in IncidentState::VARIANTS {
            if s.is_terminal() && s != DryRun {
                for &t in IncidentState::VARIANTS {
                    assert!(transition(Some(s), t).is_err(), "{s} -> {t}");
                }
            }
        }
        assert!(transition(None, Executing).is_err());
        assert!(transition(Some(Received), Executing).is_err());
        assert!(transition(Some(AwaitingApproval), Verifying).is_err());
        assert!(
            transition(Some(Executing), Resolved).is_err(),
            "no verdict without verifying"
        );
        assert!(
            transition(Some(Verifying), Refused).is_err(),
            "after an action ran, a failing check rolls it back and escalates; refused would leave it in place"
        );
        let e = transition(Some(Resolved), Executing).unwrap_err();
        assert_eq!(e.to_string(), "illegal transition resolved -> executing");
    }
}
