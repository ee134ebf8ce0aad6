//! Durable commits (DESIGN.md §7): every transaction commits with its fsync, and routine
//! writes share one transaction and one fsync in batches. Nothing is answered, and nothing
//! is visible to another reader, before it is on disk: redb shows a commit to readers when
//! `commit` returns, which for a durable commit is after the fsync (read-your-commit). An
//! earlier release committed without fsync and made a second, empty durable commit for a
//! group of them: another operator could read a change up to an fsync before it was
//! durable (and lose it to a crash after having seen it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};

use super::{RedbRegistry, RedbTx};
use crate::store::StoreError;

/// Most writes in one batch: a bound on how long the first of them waits under load.
const BATCH_MAX: usize = 64;

/// One open batch: a write transaction shared by several callers, committed once.
pub(super) struct Batch {
    txn: ::redb::WriteTransaction,
    members: usize,
    /// Why the batch will be aborted (a member's write failed), if it will.
    failed: Option<StoreError>,
    outcome: Arc<BatchOutcome>,
}

/// How a batch ended, for its members to wait on.
#[derive(Default)]
struct BatchOutcome {
    committed: Mutex<Option<Result<(), StoreError>>>,
    done: Condvar,
}

impl RedbRegistry {
    /// Runs `f` in one write transaction: committed durably when it returns `Ok`, rolled
    /// back (nothing written) when it returns `Err`. Returns, and shows the change to other
    /// readers, only once it is on disk.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&RedbTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let (generation, db) = self.guarded(|| self.db_and_generation())?;
        let txn = self.noted(generation, db.begin_write().map_err(StoreError::from))?;
        let tx = RedbTx::new(&txn, self.checkpoint_signer.as_deref());
        let out = f(&tx)?;
        let logs = tx.logs.into_inner();
        self.noted(generation, txn.commit().map_err(StoreError::from))?;
        for (level, line) in logs {
            crate::log::at(level, &line);
        }
        Ok(out)
    }

    /// Runs `f` in a write transaction shared with the other routine writes that arrive
    /// while it is open, and returns once that transaction has committed durably: one commit
    /// and one fsync for a whole batch instead of one per write (the attestation heartbeat,
    /// DESIGN.md §7).
    ///
    /// `f` must check before it writes: it cannot be rolled back alone, so it returns `Err`
    /// only for a storage failure, which aborts the whole batch (every member gets the
    /// error; nothing of the batch is written). A write that might have to be refused after
    /// writing belongs in [`RedbRegistry::write`].
    ///
    /// The member that finds nobody else waiting to join commits; others wait for it. While
    /// it commits, the next callers queue on the writer lock and form the next batch.
    pub fn write_batched<T>(
        &self,
        f: impl FnOnce(&RedbTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lock = || self.batch.lock().unwrap_or_else(|p| p.into_inner());
        self.batch_waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = lock();
        self.batch_waiting.fetch_sub(1, Ordering::SeqCst);
        let batch = match &mut *open {
            Some(batch) => batch,
            empty => empty.insert(Batch {
                txn: self.db()?.begin_write()?,
                members: 0,
                failed: None,
                outcome: Arc::default(),
            }),
        };
        let (mine, logs) = match &batch.failed {
            Some(why) => (Ok(Err(why.clone())), Vec::new()),
            None => {
                let tx = RedbTx::new(&batch.txn, self.checkpoint_signer.as_deref());
                // A member that panics must not leave the others waiting for a commit.
                let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&tx)));
                match &mine {
                    Ok(Err(e)) => batch.failed = Some(e.clone()),
                    Err(_) => batch.failed = Some(StoreError::new("a write in the batch panicked")),
                    Ok(Ok(_)) => {}
                }
                (mine, tx.logs.into_inner())
            }
        };
        batch.members += 1;
        let outcome = batch.outcome.clone();
        let last = self.batch_waiting.load(Ordering::SeqCst) == 0 || batch.members >= BATCH_MAX;
        if last && let Some(batch) = open.take() {
            drop(open);
            let committed =
                match batch.failed {
                    Some(why) => {
                        let _ = batch.txn.abort();
                        Err(why)
                    }
                    // A commit that panics (redb on a page it cannot read) must not leave the
                    // members waiting for ever: it fails the batch like any error.
                    None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        batch.txn.commit()
                    }))
                    .unwrap_or_else(|_| {
                        Err(::redb::CommitError::Storage(
                            ::redb::StorageError::Corrupted("the batch's commit panicked".into()),
                        ))
                    })
                    .map_err(StoreError::from),
                };
            if committed.is_ok() {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.batched_writes
                    .fetch_add(batch.members as u64, Ordering::Relaxed);
            }
            *outcome.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
            outcome.done.notify_all();
        } else {
            drop(open);
        }
        let committed = {
            let mut committed = outcome.committed.lock().unwrap_or_else(|p| p.into_inner());
            while committed.is_none() {
                committed = outcome
                    .done
                    .wait(committed)
                    .unwrap_or_else(|p| p.into_inner());
            }
            committed.clone().expect("set above")
        };
        let mine = mine.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match committed {
            Ok(()) => {
                for (level, line) in logs {
                    crate::log::at(level, &line);
                }
                mine
            }
            Err(why) => Err(StoreError::with_fault(
                format!("batch not committed: {}", why.message),
                why.fault,
            )),
        }
    }

    /// Batches committed by [`RedbRegistry::write_batched`] and the writes they held, since open.
    pub fn batch_counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.batched_writes.load(Ordering::Relaxed),
        )
    }
}
