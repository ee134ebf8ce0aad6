//! Signed checkpoints of the audit chain (DESIGN.md §6). The chain alone cannot tell a log
//! that was rewritten and re-chained, or cut short, from an honest one; so the server signs
//! `(seq, entry_hash)` of the chain head with its response key:
//!
//! - in the transaction of every `ITL_AUDIT_CHECKPOINT_ENTRIES`-th entry (the registry calls
//!   the signer installed here, [`CheckpointSigner`]);
//! - at least every `ITL_AUDIT_CHECKPOINT_MINUTES` when there were new entries
//!   ([`Service::checkpoint_if_due`], from the liveness sweeper);
//! - at every verification that found the log valid ([`Service::audit_verify`]).
//!
//! Verification checks the chain against every checkpoint, with the response key's public
//! half; operators copy the checkpoints (`GET /api/v1/audit/checkpoints`) where the server
//! cannot rewrite them, and the CLI checks a copy against the server's log.

use std::sync::Arc;

use super::{ResponseKey, Service, ServiceError};
use crate::audit::{Checkpoint, Verification};
use crate::store::{CheckpointSigner, Registry, RegistryTx, StoreError};

/// How often checkpoints are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCheckpoints {
    /// `ITL_AUDIT_CHECKPOINT_ENTRIES`: a checkpoint with every entry whose seq is a multiple.
    pub entries: u64,
    /// `ITL_AUDIT_CHECKPOINT_MINUTES`: at least this often while entries are added.
    pub minutes: u64,
}

impl Default for AuditCheckpoints {
    fn default() -> Self {
        AuditCheckpoints {
            entries: 1000,
            minutes: 60,
        }
    }
}

/// The registry's signer: the response key, every `interval` entries.
struct KeySigner {
    key: Arc<ResponseKey>,
    interval: u64,
}

impl CheckpointSigner for KeySigner {
    fn interval(&self) -> u64 {
        self.interval
    }

    fn sign(&self, seq: u64, entry_hash: &[u8; 48], timestamp: u64) -> Checkpoint {
        self.key.sign_checkpoint(seq, entry_hash, timestamp)
    }
}

/// Signs the head `tx` reads unless a checkpoint already covers it (or lies beyond it: a cut
/// tail is never signed over); answers the newest checkpoint and whether it was made now.
fn checkpoint_head(
    tx: &impl RegistryTx,
    key: &ResponseKey,
    now: u64,
) -> Result<(Option<Checkpoint>, bool), StoreError> {
    let latest = tx.latest_checkpoint()?;
    let Some(head) = tx.audit_head()? else {
        return Ok((latest, false));
    };
    if latest.as_ref().is_some_and(|c| c.seq >= head.seq) {
        return Ok((latest, false));
    }
    let at = latest.as_ref().map_or(now, |c| c.timestamp.max(now));
    let made = key.sign_checkpoint(head.seq, &head.entry_hash.0, at);
    let written = tx.put_checkpoint(&made)?;
    Ok(if written {
        (Some(made), true)
    } else {
        (latest, false)
    })
}

impl<R: Registry> Service<R> {
    /// Gives the registry the signer of the every-N-entries checkpoints (once the key is
    /// known).
    pub(super) fn install_checkpoint_signer(&mut self) {
        let signer = self.response_key.clone().map(|key| {
            Arc::new(KeySigner {
                key,
                interval: self.audit_checkpoints.entries.max(1),
            }) as Arc<dyn CheckpointSigner>
        });
        self.registry.set_checkpoint_signer(signer);
    }

    /// Recomputes the audit chain and checks it against every signed checkpoint; when it is
    /// valid, signs a checkpoint of the head (unless one already covers it), in the
    /// transaction that reads that head. The head may have moved since the check read the
    /// log, by this server's own appends (nothing else writes while it holds the registry).
    pub fn audit_verify(&self) -> Result<Verification, ServiceError> {
        let key = self.response_key.as_deref();
        let mut v = self.registry.audit_verify_with(key.map(|k| &k.public))?;
        if let (true, Some(key)) = (v.valid, key) {
            let now = self.platform.now();
            let (latest, made) = self.registry.write(|tx| checkpoint_head(tx, key, now))?;
            if made {
                v.checkpoints += 1;
            }
            if latest.is_some() {
                v.latest_checkpoint = latest;
            }
        }
        Ok(v)
    }

    /// Every checkpoint, oldest first (`GET /api/v1/audit/checkpoints`).
    pub fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, ServiceError> {
        Ok(self.registry.audit_checkpoints()?)
    }

    /// Signs a checkpoint of the head when entries were added since the latest one and that
    /// one is `ITL_AUDIT_CHECKPOINT_MINUTES` old (or there is none); answers it if it did.
    /// Run by the liveness sweeper.
    pub fn checkpoint_if_due(&self) -> Result<Option<Checkpoint>, ServiceError> {
        let Some(key) = self.response_key.as_deref() else {
            return Ok(None);
        };
        let now = self.platform.now();
        let period = self.audit_checkpoints.minutes.saturating_mul(60);
        let made = self.registry.write(|tx| {
            let latest = tx.latest_checkpoint()?;
            if latest
                .as_ref()
                .is_some_and(|c| now.saturating_sub(c.timestamp) < period)
            {
                return Ok::<_, StoreError>(None);
            }
            match checkpoint_head(tx, key, now)? {
                (made, true) => Ok(made),
                _ => Ok(None),
            }
        })?;
        if let Some(c) = &made {
            crate::log::info(&format!("Audit checkpoint signed: seq={}", c.seq));
        }
        Ok(made)
    }
}
