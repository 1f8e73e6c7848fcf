use chrono::Utc;

use opsmesh_proto::{
    Envelope, IncidentState,
    ledger::{ChainHead, LedgerHeads, heads_signed_bytes},
};
use opsmesh_runtime::signing::{KeyPair, KeyRing, Signer};

use super::*;
use crate::ledger::fixtures::{chain, interleaved, states};

#[test]
fn an_intact_export_verifies_and_redeliveries_are_not_breaks() {
    let mut records = interleaved();
    records.push(records[2].clone());
    let report = verify(&records);
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.incidents, report.duplicates), (2, 1));
}

#[test]
fn an_edited_record_is_named() {
    let mut records = chain("a", 4);
    records[2].payload.reason = "nothing to see".into();
    let report = verify(&records);
    assert_eq!(report.breaks.len(), 1);
    let b = &report.breaks[0];
    assert_eq!(
        (b.kind, b.seq, b.envelope_id),
        (BreakKind::Edited, 2, records[2].id)
    );
}

#[test]
fn an_edited_and_rehashed_record_breaks_the_next_link() {
    let mut records = chain("a", 4);
    records[1].payload.reason = "forged".into();
    let prev = records[1].payload.ledger.prev_hash.clone();
    records[1].seal(1, &prev);
    let b = &verify(&records).breaks[0];
    assert_eq!((b.kind, b.seq), (BreakKind::OutOfOrder, 2));
}

#[test]
fn a_removed_record_is_named() {
    let mut records = chain("a", 4);
    records.remove(1);
    let b = &verify(&records).breaks[0];
    assert_eq!((b.kind, b.seq, b.index), (BreakKind::Missing, 2, 1));
}

#[test]
fn an_inserted_record_is_named() {
    let mut records = chain("a", 4);
    let forged = chain("a", 2).pop().unwrap();
    records.insert(2, forged.clone());
    let b = &verify(&records).breaks[0];
    assert_eq!(b.envelope_id, forged.id, "{b:?}");
    assert_eq!(b.kind, BreakKind::OutOfOrder);
}

#[test]
fn reordered_records_are_named() {
    let mut records = chain("a", 4);
    records.swap(1, 2);
    let b = &verify(&records).breaks[0];
    assert_eq!((b.kind, b.seq, b.index), (BreakKind::Missing, 2, 1));
    let mut records = chain("a", 4);
    records.swap(2, 3);
    let b = &verify(&records).breaks[0];
    assert_eq!((b.kind, b.seq), (BreakKind::Missing, 3));
}

#[test]
fn a_conflicting_duplicate_id_is_named() {
    let mut records = chain("a", 3);
    let mut twin = records[1].clone();
    twin.payload.reason = "other".into();
    records.push(twin);
    let b = &verify(&records).breaks[0];
    assert_eq!(b.kind, BreakKind::Conflicting);
}

#[test]
fn jsonl_accepts_envelopes_hec_events_and_splunk_raw() {
    let records = chain("a", 3);
    let lines = [
        serde_json::to_string(&records[0]).unwrap(),
        serde_json::json!({"sourcetype": "opsmesh:remediation", "event": records[1]}).to_string(),
        serde_json::json!({"_raw": serde_json::json!({"event": records[2]}).to_string()})
            .to_string(),
        serde_json::json!({"schema": "opsmesh.alerts.v1", "payload": {}}).to_string(),
    ];
    let parsed = parse_jsonl(&lines.join("\n")).unwrap();
    assert_eq!(parsed.records.len(), 3);
    assert!(verify(&parsed.records).ok());
    assert!(parse_jsonl("{not json").unwrap_err().contains("line 1"));
}

fn keys() -> (Signer, KeyRing) {
    let pair = KeyPair::generate();
    let ring = KeyRing::from_pem(&pair.public_pem()).unwrap();
    (Signer::fixed("test", pair), ring)
}

fn signed_chain(incident: &str, n: usize, signer: &Signer) -> Vec<Envelope<Remediation>> {
    states(incident, &vec![IncidentState::Planned; n], "", Some(signer))
}

/// Rewrites `record` as the release before signing wrote it: no scheme, no signature, the
/// hash over the payload alone.
fn as_legacy(record: &mut Envelope<Remediation>) {
    record.payload.ledger.scheme = None;
    record.payload.ledger.signature = None;
    record.payload.ledger.hash = record.computed_hash();
}

#[test]
fn a_record_moved_to_another_incident_or_time_no_longer_verifies() {
    let mut records = chain("a", 2);
    records[1].incident_id = Some("b".into());
    assert_eq!(
        verify(&records).breaks[0].kind,
        BreakKind::Edited,
        "the hash covers the incident id"
    );
    let mut records = chain("a", 2);
    records[1].occurred_at += chrono::Duration::seconds(1);
    assert_eq!(verify(&records).breaks[0].kind, BreakKind::Edited);
}

#[test]
fn signed_chains_verify_with_the_trusted_keys_only() {
    let (signer, ring) = keys();
    let records = signed_chain("a", 3, &signer);
    let checks = Checks {
        keys: Some(&ring),
        heads: &[],
    };
    let report = checks.verify(&records);
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.signed, report.legacy), (3, 0));
    assert!(report.signatures_checked);

    let (stranger, _) = keys();
    let forged = signed_chain("a", 3, &stranger);
    let b = &checks.verify(&forged).breaks[0];
    assert_eq!((b.kind, b.seq), (BreakKind::BadSignature, 0), "{b:?}");

    // Edited, re-hashed and re-linked from there on, but without the key: the first
    // rewritten record is unsigned.
    let mut rewritten = records.clone();
    rewritten[1].payload.reason = "nothing happened".into();
    let prev = rewritten[0].payload.ledger.hash.clone();
    rewritten[1].seal(1, &prev);
    let prev = rewritten[1].payload.ledger.hash.clone();
    rewritten[2].seal(2, &prev);
    assert!(verify(&rewritten).ok(), "the chain alone cannot tell");
    let b = &checks.verify(&rewritten).breaks[0];
    assert_eq!((b.kind, b.seq), (BreakKind::Unsigned, 1), "{b:?}");
}

#[test]
fn old_unsigned_records_pass_only_before_the_first_signed_one() {
    let (signer, ring) = keys();
    let checks = Checks {
        keys: Some(&ring),
        heads: &[],
    };
    let mut records = signed_chain("a", 3, &signer);
    as_legacy(&mut records[0]);
    // Re-link the rest after the legacy record, signed.
    for i in 1..3 {
        let prev = records[i - 1].payload.ledger.hash.clone();
        crate::ledger::seal(&mut records[i], i as u64, &prev, Some(&signer));
    }
    let report = checks.verify(&records);
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.legacy, report.signed), (1, 2));

    // A downgrade after a signed record: hash chain intact, but unsigned.
    as_legacy(&mut records[2]);
    let prev = records[1].payload.ledger.hash.clone();
    records[2].payload.ledger.prev_hash = prev;
    records[2].payload.ledger.hash = records[2].computed_hash();
    assert!(verify(&records).ok());
    let b = &checks.verify(&records).breaks[0];
    assert_eq!((b.kind, b.seq), (BreakKind::Unsigned, 2), "{b:?}");
}

fn heads(incident: &str, record: &Envelope<Remediation>, signer: &Signer) -> Envelope<LedgerHeads> {
    let mut envelope = Envelope::new(
        "opsmesh-remediator",
        "c",
        None,
        LedgerHeads {
            heads: vec![ChainHead {
                incident_id: incident.into(),
                seq: record.payload.ledger.seq,
                hash: record.payload.ledger.hash.clone(),
            }],
            signature: None,
        },
    );
    envelope.occurred_at = Utc::now();
    envelope.payload.signature = Some(signer.sign(&heads_signed_bytes(&envelope)));
    envelope
}

#[test]
fn a_chain_cut_short_after_a_signed_head_is_named() {
    let (signer, ring) = keys();
    let records = signed_chain("a", 4, &signer);
    let head = [heads("a", &records[3], &signer)];
    let checks = Checks {
        keys: Some(&ring),
        heads: &head,
    };
    let report = checks.verify(&records);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.heads_checked, 1);

    let cut = &records[..2];
    assert!(verify(cut).ok(), "the chain alone cannot tell");
    let report = checks.verify(cut);
    let b = &report.breaks[0];
    assert_eq!((b.kind, b.seq), (BreakKind::Truncated, 3), "{b:?}");
    assert!(b.detail.contains("ends at seq 1"), "{}", b.detail);

    // A head from an untrusted key is not believed.
    let (stranger, _) = keys();
    let forged = [heads("a", &records[3], &stranger)];
    let report = Checks {
        keys: Some(&ring),
        heads: &forged,
    }
    .verify(cut);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.heads_rejected.len(), 1);
}

#[test]
fn comparing_two_copies_names_the_first_difference_per_incident() {
    let kafka = interleaved();
    assert!(compare(("kafka", &kafka), ("splunk", &kafka)).is_empty());

    let mut splunk = kafka.clone();
    splunk.retain(|r| !(r.incident_id.as_deref() == Some("b") && r.payload.ledger.seq == 2));
    let edited = splunk
        .iter_mut()
        .find(|r| r.incident_id.as_deref() == Some("a") && r.payload.ledger.seq == 1)
        .unwrap();
    edited.payload.reason = "edited in the index".into();
    edited.seal(1, &edited.payload.ledger.prev_hash.clone());
    let differences = compare(("kafka", &kafka), ("splunk", &splunk));
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert_eq!(
        (differences[0].incident_id.as_str(), differences[0].seq),
        ("a", 1)
    );
    assert!(
        differences[0].detail.contains("splunk has"),
        "{differences:?}"
    );
    assert_eq!(
        (differences[1].incident_id.as_str(), differences[1].seq),
        ("b", 2)
    );
    assert!(
        differences[1].detail.starts_with("only kafka"),
        "{differences:?}"
    );
}

#[test]
fn the_same_record_written_twice_at_different_times_is_a_duplicate_not_a_conflict() {
    let (signer, ring) = keys();
    let mut records = signed_chain("a", 3, &signer);
    // A second replica expiring the same proposal: same id and content, its own time.
    let mut twin = records[2].clone();
    twin.occurred_at += chrono::Duration::milliseconds(40);
    let prev = records[1].payload.ledger.hash.clone();
    crate::ledger::seal(&mut twin, 2, &prev, Some(&signer));
    records.push(twin);
    let report = Checks {
        keys: Some(&ring),
        heads: &[],
    }
    .verify(&records);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.duplicates, 1);
}
