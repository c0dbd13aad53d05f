//! Counters kept in this process: exact for one gateway, and what stands in for the
//! shared store while Redis does not answer (each limit divided by the replica count).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use perpetuo_core::db::limits::Limits;
use uuid::Uuid;

use super::policy::{refuse, scopes, Estimate, Now, Policy, Scope, Seed, Used};
use super::{tighter, window, Gate, Held};
use crate::metrics;

/// Bound on the scopes (keys and workspaces) with counters; idle ones go first.
const MAX_SCOPES: usize = 200_000;

#[derive(Debug, Default)]
struct Counters {
    inflight: u32,
    minute: i64,
    requests: u64,
    tokens: u64,
    period_start: i64,
    spent_nusd: i64,
    /// Estimated cost of admitted requests not settled yet.
    reserved_nusd: i64,
}

impl Counters {
    fn roll(&mut self, minute: i64, period_start: i64, seed: Option<Seed>) {
        if self.minute != minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
        if self.period_start != period_start {
            self.period_start = period_start;
            self.spent_nusd = 0;
        }
        if let Some(s) = seed.filter(|s| s.period_start.unix_timestamp() == period_start) {
            self.spent_nusd = self.spent_nusd.max(s.spent_nusd);
        }
    }

    fn used(&self) -> Used {
        Used {
            inflight: u64::from(self.inflight),
            requests: self.requests,
            tokens: self.tokens,
            spent_nusd: self.spent_nusd,
            reserved_nusd: self.reserved_nusd,
        }
    }
}

type Shared = Arc<Mutex<Counters>>;

fn lock(c: &Shared) -> MutexGuard<'_, Counters> {
    // A poisoned counter is still a counter: the panic happened elsewhere.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters kept in this process.
#[derive(Default)]
pub struct Local {
    scopes: Mutex<HashMap<Scope, Shared>>,
}

/// An admitted request's hold on its scopes: the concurrency slot (released on drop) and
/// the token and spend estimates (replaced by the real usage in `settle`).
pub struct Permit {
    scopes: Vec<(Shared, bool)>,
    estimate: Estimate,
    minute: i64,
    settled: AtomicBool,
}

impl Permit {
    pub(super) fn settle(&self, tokens: u64, cost_nusd: i64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        for (c, _) in &self.scopes {
            let mut c = lock(c);
            if c.minute == self.minute {
                c.tokens = c.tokens.saturating_sub(self.estimate.tokens);
            }
            c.tokens = c.tokens.saturating_add(tokens);
            c.reserved_nusd = c.reserved_nusd.saturating_sub(self.estimate.cost_nusd);
            c.spent_nusd = c.spent_nusd.saturating_add(cost_nusd.max(0));
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let settled = self.settled.load(Ordering::Acquire);
        for (c, holds_slot) in &self.scopes {
            let mut c = lock(c);
            if *holds_slot {
                c.inflight = c.inflight.saturating_sub(1);
            }
            if !settled {
                // Never settled: the estimate stays counted as tokens, the reservation goes.
                c.reserved_nusd = c.reserved_nusd.saturating_sub(self.estimate.cost_nusd);
            }
        }
    }
}

impl Local {
    fn counters(&self, scope: Scope) -> Shared {
        let mut map = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&scope) {
            return c.clone();
        }
        if map.len() >= MAX_SCOPES {
            // Keep the scopes some request holds; the others restart from zero (budgets
            // are re-seeded from PostgreSQL when their key is loaded again).
            map.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let c = Shared::default();
        map.insert(scope, c.clone());
        c
    }

    /// Runs the rate and budget checks in this process, with the rate limits divided by
    /// `divide` (the replica count when this stands in for the shared store); `counted`:
    /// the request counts toward RPM (not for a reservation made after a cache miss).
    pub(super) fn admit(
        &self,
        first: Scope,
        workspace_id: Uuid,
        policy: &Policy,
        estimate: Estimate,
        divide: u32,
        counted: bool,
    ) -> Gate {
        let now = Now::get();
        let scopes: Vec<(Scope, Limits, Option<Seed>, Shared)> =
            scopes(policy, first, workspace_id)
                .map(|(scope, limits, seed)| {
                    (scope, divided(limits, divide), seed, self.counters(scope))
                })
                .collect();
        // Key before workspace, always: the locks are taken in one order.
        let mut guards: Vec<MutexGuard<'_, Counters>> =
            scopes.iter().map(|(_, _, _, c)| lock(c)).collect();
        for ((_, limits, seed, _), g) in scopes.iter().zip(guards.iter_mut()) {
            let start = limits.budget_period.start(now.at).unix_timestamp();
            g.roll(now.minute, start, *seed);
        }

        let mut gate = Gate::default();
        for ((scope, limits, _, _), g) in scopes.iter().zip(guards.iter()) {
            if let Some(rpm) = limits.rpm {
                gate.requests = tighter(gate.requests, window(rpm, g.requests, &now));
            }
            if let Some(tpm) = limits.tpm {
                gate.tokens = tighter(gate.tokens, window(tpm, g.tokens, &now));
            }
            if let Some(r) = refuse(*scope, limits, g.used(), estimate, &now) {
                metrics::LIMIT_REFUSALS
                    .with_label_values(&[r.kind_label(), scope.label()])
                    .inc();
                gate.refusal = Some(r);
                return gate;
            }
        }
        let mut held = Vec::with_capacity(scopes.len());
        for ((_, limits, _, _), g) in scopes.iter().zip(guards.iter_mut()) {
            g.requests = g.requests.saturating_add(u64::from(counted));
            g.tokens = g.tokens.saturating_add(estimate.tokens);
            g.reserved_nusd = g.reserved_nusd.saturating_add(estimate.cost_nusd);
            let slot = limits.concurrency.is_some();
            if slot {
                g.inflight = g.inflight.saturating_add(1);
            }
            held.push(slot);
        }
        drop(guards);
        gate.count(u64::from(counted), estimate.tokens);
        gate.permit = Some(Held::Local(Permit {
            scopes: scopes
                .into_iter()
                .zip(held)
                .map(|((_, _, _, c), h)| (c, h))
                .collect(),
            estimate,
            minute: now.minute,
            settled: AtomicBool::new(false),
        }));
        gate
    }
}

/// Rate limits shared by `n` replicas: each takes its share (at least 1).
fn divided(l: &Limits, n: u32) -> Limits {
    let share = |v: Option<u32>| v.map(|v| (v / n.max(1)).max(1));
    Limits {
        rpm: share(l.rpm),
        tpm: share(l.tpm),
        concurrency: share(l.concurrency),
        ..*l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ErrorKind;
    use perpetuo_core::db::limits::Period;
    use time::OffsetDateTime;

    fn policy(key: Limits) -> Policy {
        Policy {
            key,
            ..Policy::default()
        }
    }

    #[test]
    fn concurrency_slot_is_released_on_drop() {
        let l = Local::default();
        let p = policy(Limits {
            concurrency: Some(1),
            ..Limits::default()
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        let first = l.admit(Scope::Key(k), w, &p, Estimate::default(), 1, true);
        assert!(first.check().is_ok());
        let second = l.admit(Scope::Key(k), w, &p, Estimate::default(), 1, true);
        assert_eq!(second.refused_kind(), Some(ErrorKind::ConcurrencyLimit));
        drop(first);
        assert!(l
            .admit(Scope::Key(k), w, &p, Estimate::default(), 1, true)
            .check()
            .is_ok());
    }

    #[test]
    fn budget_counts_settled_spend_and_reservations() {
        let l = Local::default();
        let p = policy(Limits {
            budget_nusd: Some(100),
            ..Limits::default()
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        let est = Estimate {
            tokens: 1,
            cost_nusd: 60,
        };
        let a = l.admit(Scope::Key(k), w, &p, est, 1, true);
        assert!(a.check().is_ok());
        // 60 reserved: another 60 would cross the budget.
        let b = l.admit(Scope::Key(k), w, &p, est, 1, true);
        assert_eq!(b.refused_kind(), Some(ErrorKind::BudgetExceeded));
        a.settle(1, 10);
        drop(a);
        assert!(l.admit(Scope::Key(k), w, &p, est, 1, true).check().is_ok());
    }

    #[test]
    fn seed_from_the_database_counts_for_its_period_only() {
        let l = Local::default();
        let now = OffsetDateTime::now_utc();
        let mut p = policy(Limits {
            budget_nusd: Some(100),
            ..Limits::default()
        });
        p.key_seed = Some(Seed {
            period_start: Period::Month.start(now) - time::Duration::days(40),
            spent_nusd: 1_000,
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(l
            .admit(Scope::Key(k), w, &p, Estimate::default(), 1, true)
            .check()
            .is_ok());
        p.key_seed = Some(Seed {
            period_start: Period::Month.start(now),
            spent_nusd: 100,
        });
        let g = l.admit(Scope::Key(k), w, &p, Estimate::default(), 1, true);
        assert_eq!(g.refused_kind(), Some(ErrorKind::BudgetExceeded));
        assert_eq!(g.check().unwrap_err().code, ErrorKind::InsufficientQuota);
    }
}
