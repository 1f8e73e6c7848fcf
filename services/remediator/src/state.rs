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
//!
//! reopened by an investigation's report ([`reopen`], once per incident):
//!   escalated (the rules had nothing to do) ─┬→ planned (its proposals; every one awaits a human)
//!                                            └→ refused (a proposal failed the plan's checks)
//! ```
//!
//! Escalated is terminal for the incident's own procedure. Only an investigator's report may
//! take it up again, through [`reopen`]; which escalations it may take up (those where the rules
//! proposed nothing, never one after an action, a rollback or an expired proposal) is decided
//! from the ledger by [`crate::investigation`].

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

/// The next state when an investigation's report takes up an escalated incident: its plan
/// (`planned`), or the refusal of a proposal (`refused`). Every later record follows
/// [`transition`].
pub fn reopen(
    from: Option<IncidentState>,
    to: IncidentState,
) -> Result<IncidentState, IllegalTransition> {
    if from == Some(Escalated) && matches!(to, Planned | Refused) {
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

    #[test]
    fn only_an_escalation_reopens_and_only_into_a_plan_or_a_refusal() {
        assert_eq!(reopen(Some(Escalated), Planned), Ok(Planned));
        assert_eq!(reopen(Some(Escalated), Refused), Ok(Refused));
        for &s in IncidentState::VARIANTS {
            for &t in IncidentState::VARIANTS {
                if (s, t) != (Escalated, Planned) && (s, t) != (Escalated, Refused) {
                    assert!(reopen(Some(s), t).is_err(), "{s} -> {t}");
                }
            }
            assert!(reopen(None, s).is_err());
        }
        assert!(
            transition(Some(Escalated), Planned).is_err(),
            "the procedure itself never leaves escalated"
        );
        // After the reopening, the plan goes on along the ordinary edges, approval first.
        let mut state = reopen(Some(Escalated), Planned).unwrap();
        for next in [
            AwaitingApproval,
            AwaitingApproval,
            Executing,
            Verifying,
            Resolved,
        ] {
            state = transition(Some(state), next).unwrap();
        }
        let e = reopen(Some(Resolved), Planned).unwrap_err();
        assert_eq!(e.to_string(), "illegal transition resolved -> planned");
    }
}
