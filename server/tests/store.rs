//! The registry's batched writes (`RedbRegistry::write_batched`, the attestation heartbeat): writes
//! that arrive together share one durable commit, every acknowledged write survives a
//! reopen, and a failed or panicking member takes its batch down without writing any of it
//! and without leaving the others waiting. Audit pages are slices of the whole log; registry
//! scans see every machine once without pinning the file.

use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use attest_common::EkSource;
use attest_common::lifecycle::{State, Status};
use attest_server::record::MachineRecord;
use attest_server::store::redb::RedbRegistry;
use attest_server::store::{RegistryTx as _, StoreError};

fn record(id: &str) -> MachineRecord {
    MachineRecord::new(
        id.into(),
        format!("{:0>96}", id.len()),
        EkSource::Cert,
        State::new(Status::Attested),
        1,
    )
}

#[test]
fn concurrent_writes_share_commits_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attestation.redb");
    let store = Arc::new(RedbRegistry::open(&path).unwrap());
    let threads = 32;
    let rounds = 20;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for r in 0..rounds {
                    let id = format!("m-{t}-{r}");
                    let written = store
                        .write_batched(|tx| {
                            tx.update_machine(&record(&id))?;
                            Ok(id.clone())
                        })
                        .unwrap();
                    assert_eq!(written, id);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (batches, writes) = store.batch_counts();
    assert_eq!(writes, (threads * rounds) as u64);
    assert!(
        batches < writes,
        "{writes} concurrent writes took {batches} commits: nothing was batched"
    );
    drop(store);
    let store = RedbRegistry::open(&path).unwrap();
    for t in 0..threads {
        for r in 0..rounds {
            let id = format!("m-{t}-{r}");
            assert_eq!(store.machine(&id).unwrap(), Some(record(&id)), "{id}");
        }
    }
}

#[test]
fn a_failed_member_aborts_its_batch_and_nothing_of_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbRegistry::open(&dir.path().join("attestation.redb")).unwrap());
    let (inside, entered) = mpsc::channel();
    let failing = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.write_batched(|tx| {
                tx.update_machine(&record("written-then-failed"))?;
                inside.send(()).unwrap();
                // Long enough for the other writer to queue behind us.
                std::thread::sleep(Duration::from_millis(300));
                Err::<(), _>(StoreError::new("disk on fire"))
            })
        })
    };
    entered.recv().unwrap();
    let other = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.write_batched(|tx| {
                tx.update_machine(&record("queued"))?;
                Ok(())
            })
        })
    };
    let failed = failing.join().unwrap();
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.message.contains("disk on fire")),
        "{failed:?}"
    );
    assert_eq!(store.machine("written-then-failed").unwrap(), None);
    // The queued writer either shared the aborted batch (and was told) or committed in its
    // own; never acknowledged without being written.
    let queued = other.join().unwrap();
    assert_eq!(
        queued.is_ok(),
        store.machine("queued").unwrap().is_some(),
        "{queued:?}"
    );
    // The store goes on.
    store
        .write_batched(|tx| tx.update_machine(&record("after")))
        .unwrap();
    assert!(store.machine("after").unwrap().is_some());
}

#[test]
fn a_panicking_member_panics_alone_and_leaves_nobody_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbRegistry::open(&dir.path().join("attestation.redb")).unwrap());
    let panicking = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.write_batched(|tx| {
                tx.update_machine(&record("half"))?;
                panic!("a bug in a heartbeat");
                #[allow(unreachable_code)]
                Ok(())
            })
        })
    };
    assert!(panicking.join().is_err(), "the panic reaches its caller");
    assert_eq!(store.machine("half").unwrap(), None);
    store
        .write_batched(|tx| tx.update_machine(&record("next")))
        .unwrap();
    assert!(store.machine("next").unwrap().is_some());
}

/// Audit pages hold only their entries (the log is read one entry at a time); with and
/// without a machine filter they are the slices of the whole, and the totals count all.
#[test]
fn audit_pages_are_slices_of_the_whole_log() {
    use attest_server::audit::NewEntry;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbRegistry::open(&dir.path().join("attestation.redb")).unwrap();
    store
        .write(|tx| {
            for i in 0..250u64 {
                tx.audit(
                    NewEntry {
                        operator_cn: "alice".into(),
                        action: "note".into(),
                        machine_id: Some(format!("m-{}", i % 3)),
                        detail: format!("entry {i}"),
                        ..NewEntry::default()
                    },
                    i,
                )?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let (all, total) = store.audit_page(None, 1, 1_000).unwrap();
    assert_eq!((all.len(), total), (250, 250));
    for (filter, per_page) in [(None, 7), (None, 50), (Some("m-1"), 9), (Some("m-2"), 200)] {
        let whole: Vec<_> = all
            .iter()
            .filter(|e| filter.is_none_or(|m| e.machine_id.as_deref() == Some(m)))
            .collect();
        for page in 1..=(whole.len() / per_page + 2) {
            let (entries, total) = store.audit_page(filter, page, per_page).unwrap();
            assert_eq!(total, whole.len(), "{filter:?}");
            let want: Vec<_> = whole
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|e| e.seq)
                .collect();
            let got: Vec<_> = entries.iter().map(|e| e.seq).collect();
            assert_eq!(got, want, "{filter:?} page {page} of {per_page}");
        }
    }
    assert!(store.audit_verify().unwrap().valid);
}

/// A registry scan reads a page per read transaction, so heartbeats written while its
/// caller (a slow listing client) is paused reuse the file's space instead of growing it:
/// with one transaction held across the scan, 3,000 heartbeats grew this file 16-fold.
#[test]
fn a_paused_scan_does_not_pin_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attestation.redb");
    let store = Arc::new(RedbRegistry::open(&path).unwrap());
    let ids: Vec<String> = (0..2_000).map(|i| format!("m-{i:05}")).collect();
    store
        .write(|tx| {
            for id in &ids {
                tx.put_machine(&record(id))?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let (resume, paused) = mpsc::channel::<()>();
    let (seen, first) = mpsc::channel();
    let scan = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut visited = 0;
            store
                .each_machine(|m, _| {
                    if visited == 0 {
                        seen.send(m.id).unwrap();
                        let _ = paused.recv();
                    }
                    visited += 1;
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            visited
        })
    };
    assert_eq!(first.recv().unwrap(), ids[0]);
    let before = std::fs::metadata(&path).unwrap().len();
    for t in 1..=3_000u64 {
        let mut m = record(&ids[t as usize % ids.len()]);
        m.last_attested_at = Some(t);
        store.write_batched(|tx| tx.update_machine(&m)).unwrap();
    }
    let after = std::fs::metadata(&path).unwrap().len();
    drop(resume);
    assert_eq!(scan.join().unwrap(), ids.len());
    assert!(
        after < before * 2,
        "the file grew from {before} to {after} bytes while a scan was paused"
    );
}

/// Across its pages a scan sees every machine exactly once, in id order, with its stale
/// mark, even while the machines it has already passed are rewritten.
#[test]
fn a_scan_sees_every_machine_once_across_pages() {
    use attest_server::store::redb::SCAN_PAGE;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbRegistry::open(&dir.path().join("attestation.redb")).unwrap();
    let ids: Vec<String> = (0..SCAN_PAGE * 5 / 2 + 1)
        .map(|i| format!("m-{i:05}"))
        .collect();
    store
        .write(|tx| {
            for (i, id) in ids.iter().enumerate() {
                tx.put_machine(&record(id))?;
                if i % 7 == 0 {
                    tx.mark_stale(id, 1)?;
                }
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let mut visited = Vec::new();
    store
        .each_machine(|m, marked| {
            let i = ids.iter().position(|id| *id == m.id).unwrap();
            assert_eq!(marked, i % 7 == 0, "{}", m.id);
            let mut again = m.clone();
            again.last_attested_at = Some(7);
            store.write(|tx| tx.update_machine(&again)).unwrap();
            visited.push(m.id);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(visited, ids);
    // It stops where the caller breaks, also on a page boundary.
    let mut taken = 0;
    store
        .each_machine(|_, _| {
            taken += 1;
            if taken == SCAN_PAGE {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(taken, SCAN_PAGE);
}

/// A registry written before the EK key index existed gets it on open: a proven machine
/// stored then is found by its EK key afterwards, an unproven one of the same key is not
/// indexed, and deleting it leaves the proven machine's entry alone.
#[test]
fn the_ek_key_index_is_built_for_an_older_registry() {
    const BY_EK_KEY: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("by_ek_key");
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let pem = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
    let mut der = [0u8; attest_common::fingerprint::MAX_EK_DER];
    let (cert, _) = attest_common::fingerprint::decode_ek(pem.as_bytes(), &mut der).unwrap();
    let mut m = record("m-1");
    m.ek_cert_der = Some(cert.to_vec());
    m.ak_activated = true;
    let key = m.ek_key_id().expect("a P-384 EK has a key id");
    // The same key, never proven: not indexed (it cannot hold the key against the machine).
    let mut unproven = record("m-2");
    unproven.ek_fingerprint = "ef".repeat(48);
    unproven.ek_cert_der = Some(cert.to_vec());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attestation.redb");
    let store = RedbRegistry::open(&path).unwrap();
    store.write(|tx| tx.put_machine(&m)).unwrap();
    store.write(|tx| tx.put_machine(&unproven)).unwrap();
    drop(store);
    // As the previous release left it: no index, no mark.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(BY_EK_KEY).unwrap();
        txn.open_table(META)
            .unwrap()
            .remove("ek-key-index-v2")
            .unwrap();
        txn.commit().unwrap();
    }
    let store = RedbRegistry::open(&path).unwrap();
    let found = store.write(|tx| tx.machine_by_ek_key(&key)).unwrap();
    assert_eq!(found.map(|r| r.id).as_deref(), Some("m-1"));
    // Deleting the unproven record leaves the proven one's entry alone.
    store.write(|tx| tx.delete_machine(&unproven)).unwrap();
    let found = store.write(|tx| tx.machine_by_ek_key(&key)).unwrap();
    assert_eq!(found.map(|r| r.id).as_deref(), Some("m-1"));
    store.write(|tx| tx.delete_machine(&m)).unwrap();
    assert!(
        store
            .write(|tx| tx.machine_by_ek_key(&key))
            .unwrap()
            .is_none()
    );
}
