//! Generation counters that let a cache fill notice a change that overtook it. A fill
//! reads its key's generations before it asks the database and compares them after it
//! stored what the database said; every invalidation bumps them before it removes
//! entries. Whichever comes second removes the entry, so a change heard while a fill was
//! in flight is never undone by that fill.
//!
//! The counters are sharded by key hash, so that changes to other keys seldom make a fill
//! read again; changes that name no key (a workspace, a reconnection) bump every shard.

use std::sync::atomic::{AtomicU64, Ordering};

use perpetuo_core::apikey::KeyHash;

const SHARDS: usize = 64;

#[derive(Default)]
struct Shard {
    /// Bumped by every change.
    any: AtomicU64,
    /// Bumped by revocations only (what must also leave the stale store).
    revocations: AtomicU64,
}

/// A key's generations as a fill saw them when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub any: u64,
    pub revocations: u64,
}

pub struct Generations {
    shards: [Shard; SHARDS],
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Shard::default()),
        }
    }
}

impl Generations {
    fn shard(&self, hash: &KeyHash) -> &Shard {
        &self.shards[usize::from(hash.0[0]) % SHARDS]
    }

    pub fn seen(&self, hash: &KeyHash) -> Seen {
        let s = self.shard(hash);
        Seen {
            any: s.any.load(Ordering::SeqCst),
            revocations: s.revocations.load(Ordering::SeqCst),
        }
    }

    /// A change to one key; `revocation` when its stale copy must go too.
    pub fn bump(&self, hash: &KeyHash, revocation: bool) {
        let s = self.shard(hash);
        if revocation {
            s.revocations.fetch_add(1, Ordering::SeqCst);
        }
        s.any.fetch_add(1, Ordering::SeqCst);
    }

    /// A change that may concern any key (not a revocation).
    pub fn bump_all(&self) {
        for s in &self.shards {
            s.any.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_is_seen_by_its_key_and_a_revocation_counts_as_a_change() {
        let g = Generations::default();
        let a = KeyHash::of("a");
        let before = g.seen(&a);
        g.bump(&a, false);
        let after = g.seen(&a);
        assert_ne!(before.any, after.any);
        assert_eq!(before.revocations, after.revocations);
        g.bump(&a, true);
        let revoked = g.seen(&a);
        assert_ne!(after.any, revoked.any);
        assert_ne!(after.revocations, revoked.revocations);
        g.bump_all();
        assert_ne!(g.seen(&a).any, revoked.any);
        assert_eq!(g.seen(&a).revocations, revoked.revocations);
    }
}
