//! `acl limit`: setting the expiry and read limit of a secret's current value after it was
//! written, idempotently, so a configuration (the NixOS module) can apply it at every start.

use std::time::Duration;

use crate::address::Address;
use crate::entries::{rewrite_keeping_value, Carry, Kept};
use crate::error::{Result, StoreError};
use crate::records::EntryKind;
use crate::rows::{self, Limits};
use crate::store::Store;

/// When the value stops being served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expiry {
    /// Keep what the value has.
    #[default]
    Keep,
    /// Never (remove an expiry).
    Never,
    /// At this time, ns since the epoch.
    At(i64),
    /// This long after the value was written. Counted from the write, not from now, so
    /// applying the same rule again (at every service start) never moves the expiry forward.
    AfterWrite(Duration),
}

/// A change of limits; fields left at their default keep what the value has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitChange {
    /// The expiry.
    pub expires: Expiry,
    /// `Some(Some(n))` sets a read limit of `n` opens, `Some(None)` removes it.
    pub max_opens: Option<Option<u64>>,
}

impl LimitChange {
    /// The limits of a value written at `written_ns` with limits `old`, after this change.
    pub fn apply(&self, old: Limits, written_ns: i64) -> Limits {
        let expires_ns = match self.expires {
            Expiry::Keep => old.expires_ns,
            Expiry::Never => None,
            Expiry::At(t) => Some(t),
            Expiry::AfterWrite(d) => {
                Some(written_ns.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
            }
        };
        Limits {
            expires_ns,
            max_opens: self.max_opens.unwrap_or(old.max_opens),
        }
    }
}

/// What [`Store::set_limits`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitOutcome {
    /// The limits in force now.
    pub limits: Limits,
    /// Whether they changed (`false`: nothing was written).
    pub changed: bool,
    /// The row version now in force.
    pub version: i64,
}

impl Store {
    /// Changes the limits of the secret at `addr`'s current value. The value, the time it was
    /// written and its read count are kept (a limit is not a new value). Nothing is written —
    /// no head bump, no audit record queued with [`Store::audit_with_next_write`] — when the
    /// limits are already those asked for.
    pub fn set_limits(&mut self, addr: &Address, change: &LimitChange) -> Result<LimitOutcome> {
        if change.max_opens == Some(Some(0)) {
            return Err(StoreError::InvalidOperation(format!(
                "{addr}: a read limit of 0 opens would never serve the value; give 1 or more"
            )));
        }
        let carry = Carry::new(self);
        let mut outcome = None;
        let out = self.write_txn_if(|tx, generation, keys| {
            let vault = keys.open_vault_by_name(tx, &addr.vault)?;
            let entry = crate::entries::resolve_entry(tx, keys, &vault, addr)?;
            if entry.kind == EntryKind::Dir {
                return Err(StoreError::IsADirectory(format!(
                    "{addr} (limits are set on a secret's value)"
                )));
            }
            if entry.kind == EntryKind::Template && matches!(change.max_opens, Some(Some(_))) {
                // Mounts render a template at each open and count no opens of it: a read
                // limit there would be served unlimited.
                return Err(StoreError::InvalidOperation(format!(
                    "{addr} is a template: mounts do not count its opens, so a read limit there \
                     would not hold; set an expiry, or limit a secret read directly"
                )));
            }
            let written = rows::written_ns(tx, &keys.store_id, &vault, &entry)?;
            let limits = change.apply(entry.limits, written);
            if limits == entry.limits {
                outcome = Some(LimitOutcome {
                    limits,
                    changed: false,
                    version: entry.version,
                });
                return Ok(false);
            }
            let kept = Kept {
                parent: entry.parent,
                name: &entry.name,
                acl: entry.acl.clone(),
                limits,
            };
            let new = rewrite_keeping_value(tx, keys, &vault, generation, &entry, &kept, &carry)?;
            outcome = Some(LimitOutcome {
                limits,
                changed: true,
                version: new.version,
            });
            Ok(true)
        });
        carry.settle(&out);
        if !out.as_ref().is_ok_and(|c| *c) {
            // Nothing committed: a record queued for this change describes nothing.
            self.pending_audit.clear();
        }
        out.map_err(|e| crate::entries::retag(e, addr))?;
        Ok(outcome.expect("the transaction body ran"))
    }
}
