//! How the entries of one priority (a tier) share its traffic: the order a request tries
//! them in. Standby entries (weight 0) come last, tried only when the others failed.
//!
//! - `weighted`: smooth weighted round robin (as nginx's `upstream` does): over any window
//!   of `Σ weights` requests each entry is first exactly `weight` times, interleaved rather
//!   than in bursts. State per tier, in process.
//! - `latency`: power of two choices on each entry's cost — its peak-EWMA time to first
//!   content (a failure counts as [`FAILURE_MS`]), times its requests in flight + 1,
//!   divided by its weight. The estimate decays towards zero while an entry is not asked,
//!   so an entry that was slow is tried again within seconds and its traffic comes back
//!   once it is fast again.
//!
//! The rest of a tier follows in the strategy's order; fallback then moves to the next
//! tier. Both states are per gateway and bounded.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use perpetuo_core::db::workspaces::{Routing, RoutingStrategy};
use rand::Rng;
use uuid::Uuid;

use super::{Entry, PoolKey};

/// How fast an estimate forgets: after `TAU` without news it is at 1/e of itself.
const TAU: Duration = Duration::from_secs(2);
/// What a failed attempt counts as, in milliseconds of time to first content.
pub const FAILURE_MS: f64 = 2_000.0;
/// Tiers and entries remembered at most (idle ones are forgotten after [`FORGET_AFTER`]).
const MAX_TRACKED: u64 = 100_000;
const FORGET_AFTER: Duration = Duration::from_secs(3600);

pub struct Balancer {
    /// Smooth weighted round robin's current weights, per tier (by its entries' ids).
    tiers: Cache<u64, Arc<Mutex<Vec<i64>>>>,
    stats: Cache<Uuid, Arc<EntryStats>>,
}

impl Default for Balancer {
    fn default() -> Self {
        Self {
            tiers: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_idle(FORGET_AFTER)
                .build(),
            stats: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_idle(FORGET_AFTER)
                .build(),
        }
    }
}

impl Balancer {
    /// Orders one tier in place: the entry to try first, then the rest in the strategy's
    /// order, standby entries last. A request with a `sticky` key goes first to the entry
    /// that key falls on (weighted rendezvous hashing: the same entry while the tier is
    /// the same, and only the keys of an entry that leaves move).
    pub fn arrange(&self, routing: Routing, tier: &mut [Arc<Entry>], sticky: Option<u64>) {
        // A stable sort: standbys keep their relative order at the end.
        tier.sort_by_key(|e| e.weight == 0);
        let active = tier.iter().take_while(|e| e.weight > 0).count();
        if active < 2 {
            return;
        }
        let tier = &mut tier[..active];
        match routing.strategy {
            RoutingStrategy::Weighted => self.weighted(tier),
            RoutingStrategy::Latency => self.least_cost(tier),
        }
        if let Some(key) = sticky.filter(|_| routing.sticky) {
            let home = tier
                .iter()
                .map(|e| rendezvous(key, e))
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(i, _)| i);
            tier[..=home].rotate_right(1);
        }
    }

    fn weighted(&self, tier: &mut [Arc<Entry>]) {
        let by_turn = self.smooth_turn(tier.iter().map(|e| (e.id, e.weight)));
        permute(tier, &by_turn);
    }

    /// Smooth weighted round robin over `members` (ids and weights, all above 0): the
    /// order of this turn, the one to try first at its head. The state is kept per set of
    /// members.
    fn smooth_turn(&self, members: impl Iterator<Item = (Uuid, u32)> + Clone) -> Vec<usize> {
        let mut hasher = DefaultHasher::new();
        for (id, _) in members.clone() {
            id.hash(&mut hasher);
        }
        let weights: Vec<i64> = members.map(|(_, w)| i64::from(w)).collect();
        let state = self
            .tiers
            .get_with(hasher.finish(), || Arc::new(Mutex::new(Vec::new())));
        let mut current = state.lock().unwrap_or_else(|p| p.into_inner());
        if current.len() != weights.len() {
            *current = vec![0; weights.len()];
        }
        let total: i64 = weights.iter().sum();
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let mut by_turn: Vec<usize> = (0..weights.len()).collect();
        // The largest current weight goes first (the earliest on a tie); it pays the total.
        by_turn.sort_by_key(|&i| std::cmp::Reverse(current[i]));
        current[by_turn[0]] -= total;
        by_turn
    }

    /// The keys of `entry`'s pool in the order to try them: by smooth weighted round
    /// robin over the keys with a weight, then the standby keys (weight 0). An entry
    /// without keys is tried once, with none (`None`).
    pub fn keys_in_order<'e>(&self, entry: &'e Entry) -> Vec<Option<&'e PoolKey>> {
        let keys = &entry.keys;
        if keys.is_empty() {
            return vec![None];
        }
        let mut active: Vec<&PoolKey> = keys.iter().filter(|k| k.weight > 0).collect();
        if active.len() > 1 {
            let turn = self.smooth_turn(active.iter().map(|k| (k.id, k.weight)));
            let ordered = turn.iter().map(|&i| active[i]).collect();
            active = ordered;
        }
        active
            .into_iter()
            .chain(keys.iter().filter(|k| k.weight == 0))
            .map(Some)
            .collect()
    }

    fn least_cost(&self, tier: &mut [Arc<Entry>]) {
        let now = Instant::now();
        let costs: Vec<f64> = tier.iter().map(|e| self.cost(e, now)).collect();
        let mut by_cost: Vec<usize> = (0..tier.len()).collect();
        by_cost.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]));
        // Two at random, the cheaper first: never a herd on the one entry that looks best.
        let mut rng = rand::thread_rng();
        let a = rng.gen_range(0..tier.len());
        let b = (a + rng.gen_range(1..tier.len())) % tier.len();
        let first = if costs[b] < costs[a] { b } else { a };
        by_cost.retain(|&i| i != first);
        by_cost.insert(0, first);
        permute(tier, &by_cost);
    }

    fn stats(&self, entry: Uuid) -> Arc<EntryStats> {
        self.stats.get_with(entry, || Arc::new(EntryStats::new()))
    }

    /// `entry`'s state, kept on the entry after the first look-up.
    fn stats_of<'e>(&self, entry: &'e Entry) -> &'e Arc<EntryStats> {
        entry.balance.get_or_init(|| self.stats(entry.id))
    }

    fn cost(&self, entry: &Entry, now: Instant) -> f64 {
        let stats = self.stats_of(entry);
        let pending = f64::from(stats.pending.load(Ordering::Relaxed));
        // +1 ms: an entry never asked still weighs its requests in flight.
        (stats.estimate(now) + 1.0) * (pending + 1.0) / f64::from(entry.weight.max(1))
    }

    /// An attempt on `entry` begins; it counts as in flight until the guard is dropped.
    pub fn attempting(&self, entry: &Entry) -> InFlight {
        let stats = self.stats_of(entry).clone();
        stats.pending.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }

    /// `entry` answered with its first content after `ttfc`.
    pub fn answered(&self, entry: &Entry, ttfc: Duration) {
        self.stats_of(entry)
            .observe(ttfc.as_secs_f64() * 1000.0, Instant::now());
    }

    /// An attempt on `entry` failed in a way that says something about the entry.
    pub fn failed(&self, entry: &Entry) {
        self.stats_of(entry).observe(FAILURE_MS, Instant::now());
    }
}

/// Weighted rendezvous score of `entry` for `key`: the entry with the highest score is
/// the key's, and each entry is some key's in proportion to its weight.
fn rendezvous(key: u64, entry: &Entry) -> f64 {
    let mut h = DefaultHasher::new();
    (key, entry.id).hash(&mut h);
    // A uniform draw in (0, 1) from the hash's top 53 bits.
    let u = ((h.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(entry.weight) / u.ln()
}

/// Reorders `items` in place so that `order[k]` (an index into the old order) comes k-th.
fn permute<T>(items: &mut [T], order: &[usize]) {
    // Where each old item goes, then swaps along the cycles: no clone, no allocation
    // beyond the small index list.
    let mut dest = vec![0; order.len()];
    for (k, &i) in order.iter().enumerate() {
        dest[i] = k;
    }
    for i in 0..items.len() {
        while dest[i] != i {
            let j = dest[i];
            items.swap(i, j);
            dest.swap(i, j);
        }
    }
}

/// One entry's peak-EWMA estimate and requests in flight.
#[derive(Debug)]
pub struct EntryStats {
    estimate: Mutex<Estimate>,
    pending: AtomicU32,
}

#[derive(Debug)]
struct Estimate {
    ms: f64,
    at: Instant,
}

impl EntryStats {
    fn new() -> Self {
        Self {
            // Unknown: tried soon, then known.
            estimate: Mutex::new(Estimate {
                ms: 0.0,
                at: Instant::now(),
            }),
            pending: AtomicU32::new(0),
        }
    }

    fn estimate(&self, now: Instant) -> f64 {
        let e = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        e.ms * decay(now.saturating_duration_since(e.at))
    }

    /// A peak is taken at once; a lower sample pulls the estimate down by how long ago
    /// the last one was.
    fn observe(&self, sample_ms: f64, now: Instant) {
        let mut e = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        let w = decay(now.saturating_duration_since(e.at));
        e.ms = if sample_ms > e.ms {
            sample_ms
        } else {
            e.ms * w + sample_ms * (1.0 - w)
        };
        e.at = now;
    }
}

fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / TAU.as_secs_f64()).exp()
}

/// An attempt in flight on an entry (counted in its cost until dropped).
pub struct InFlight(Arc<EntryStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Upstream;
    use perpetuo_core::provider::ProviderKind;
    use perpetuo_core::Secret;
    use std::collections::BTreeMap;

    pub(crate) fn entry(name: &str, weight: u32) -> Arc<Entry> {
        Arc::new(Entry {
            id: Uuid::now_v7(),
            name: name.into(),
            kind: ProviderKind::Openai,
            upstream: Upstream::parse("https://api.openai.com/v1").unwrap(),
            keys: Vec::new(),
            quota: None,
            priority: 1,
            weight,
            models: Vec::new(),
            model_map: BTreeMap::new(),
            balance: Default::default(),
        })
    }

    fn routing(strategy: RoutingStrategy) -> Routing {
        Routing {
            strategy,
            sticky: false,
        }
    }

    fn firsts(b: &Balancer, s: RoutingStrategy, tier: &[Arc<Entry>], n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let mut t = tier.to_vec();
                b.arrange(routing(s), &mut t, None);
                t[0].name.clone()
            })
            .collect()
    }

    #[test]
    fn a_pool_shares_by_key_weight_and_keeps_standby_keys_last() {
        let key = |label: &str, weight| PoolKey {
            id: Uuid::now_v7(),
            label: label.into(),
            weight,
            secret: Secret::new(label.into()),
        };
        let mut e = Arc::try_unwrap(entry("pool", 1)).unwrap();
        e.keys = vec![key("a", 3), key("spare", 0), key("b", 1)];
        let b = Balancer::default();
        let mut first = std::collections::HashMap::new();
        for _ in 0..400 {
            let order: Vec<&str> = b
                .keys_in_order(&e)
                .iter()
                .map(|k| k.map_or("", |k| k.label.as_str()))
                .collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "spare", "the standby key comes last");
            *first.entry(order[0]).or_insert(0) += 1;
        }
        assert_eq!((first["a"], first["b"]), (300, 100));
        e.keys.clear();
        assert!(
            matches!(b.keys_in_order(&e).as_slice(), [None]),
            "no key: tried once, with none"
        );
    }

    #[test]
    fn weights_give_exact_interleaved_shares() {
        let b = Balancer::default();
        let tier = vec![entry("a", 3), entry("b", 1), entry("standby", 0)];
        let got = firsts(&b, RoutingStrategy::Weighted, &tier, 8);
        assert_eq!(got, ["a", "a", "b", "a", "a", "a", "b", "a"]);
        let mut t = tier.clone();
        b.arrange(routing(RoutingStrategy::Weighted), &mut t, None);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[2].name, "standby",
            "a standby entry only after the others"
        );
    }

    #[test]
    fn equal_weights_take_turns() {
        let b = Balancer::default();
        let tier = vec![entry("a", 1), entry("b", 1), entry("c", 1)];
        let got = firsts(&b, RoutingStrategy::Weighted, &tier, 6);
        assert_eq!(got, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_slow_entry_loses_its_traffic_and_is_tried_again_later() {
        let b = Balancer::default();
        let (fast, slow) = (entry("fast", 1), entry("slow", 1));
        b.answered(&fast, Duration::from_millis(5));
        b.answered(&slow, Duration::from_millis(205));
        let tier = vec![fast.clone(), slow.clone()];
        assert!(firsts(&b, RoutingStrategy::Latency, &tier, 20)
            .iter()
            .all(|n| n == "fast"));
        // Without news the slow entry's estimate decays until it is worth asking again.
        let later = Instant::now() + TAU * 8;
        assert!(b.stats(slow.id).estimate(later) < b.stats(fast.id).estimate(Instant::now()));
        // A failure is a peak at once.
        b.failed(&fast);
        assert!(b.stats(fast.id).estimate(Instant::now()) >= FAILURE_MS * 0.99);
    }

    #[test]
    fn requests_in_flight_weigh_on_the_cost() {
        let b = Balancer::default();
        let (x, y) = (entry("x", 1), entry("y", 1));
        b.answered(&x, Duration::from_millis(10));
        b.answered(&y, Duration::from_millis(10));
        let held: Vec<InFlight> = (0..4).map(|_| b.attempting(&x)).collect();
        let tier = vec![x.clone(), y.clone()];
        assert!(firsts(&b, RoutingStrategy::Latency, &tier, 10)
            .iter()
            .all(|n| n == "y"));
        drop(held);
        assert_eq!(b.stats(x.id).pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_sticky_key_stays_on_its_entry_and_keys_spread_by_weight() {
        let b = Balancer::default();
        let tier = vec![entry("a", 3), entry("b", 1)];
        let sticky = Routing {
            strategy: RoutingStrategy::Weighted,
            sticky: true,
        };
        let first = |key: u64, tier: &[Arc<Entry>]| {
            let mut t = tier.to_vec();
            b.arrange(sticky, &mut t, Some(key));
            t[0].name.clone()
        };
        for key in 0..50u64 {
            let home = first(key, &tier);
            assert!((0..5).all(|_| first(key, &tier) == home), "key {key} moved");
        }
        let on_a = (0..4000u64).filter(|&k| first(k, &tier) == "a").count();
        assert!(
            (2800..=3200).contains(&on_a),
            "{on_a} of 4000 keys on the weight-3 entry"
        );
        // Without stickiness the key is ignored.
        let mut t = tier.clone();
        b.arrange(routing(RoutingStrategy::Weighted), &mut t, Some(1));
        assert_eq!(t.len(), 2);
    }

    /// A microbenchmark, not a check: the cost of one routing decision over a tier of 8
    /// entries, per strategy. Run it in a release build:
    /// `cargo test --release -p perpetuo-gateway --lib -- --ignored decision_cost --nocapture`.
    #[test]
    #[ignore]
    fn decision_cost() {
        let b = Balancer::default();
        let tier: Vec<Arc<Entry>> = (0..8).map(|i| entry(&format!("e{i}"), 1 + i % 3)).collect();
        for e in &tier {
            b.answered(e, Duration::from_millis(10 + u64::from(e.weight)));
        }
        let rounds = 200_000u32;
        for (label, strategy, sticky) in [
            ("weighted", RoutingStrategy::Weighted, false),
            ("latency", RoutingStrategy::Latency, false),
            ("weighted + sticky", RoutingStrategy::Weighted, true),
        ] {
            let routing = Routing { strategy, sticky };
            let mut t = tier.clone();
            let started = Instant::now();
            for i in 0..rounds {
                b.arrange(routing, &mut t, Some(u64::from(i)));
            }
            let ns = started.elapsed().as_nanos() / u128::from(rounds);
            println!("{label}: {ns} ns per decision over a tier of 8");
            assert_eq!(t.len(), 8);
        }
        // The whole choice as a request makes it with key pools: the tier's order, then the
        // first entry's keys in order and their headroom (one known, one not).
        let pooled: Vec<Arc<Entry>> = (0..8)
            .map(|i| {
                let mut e = Arc::try_unwrap(entry(&format!("p{i}"), 1 + i % 3)).unwrap();
                e.keys = (0..4)
                    .map(|k| PoolKey {
                        id: Uuid::now_v7(),
                        label: format!("k{k}"),
                        weight: 1 + k % 2,
                        secret: Secret::new("sk".into()),
                    })
                    .collect();
                Arc::new(e)
            })
            .collect();
        let rooms = super::super::Headrooms::default();
        let now_ms = super::super::headroom::now_ms();
        let report = super::super::headroom::Report {
            requests: Some(super::super::headroom::Left {
                remaining: 1_000_000,
                reset_ms: now_ms + 600_000,
            }),
            ..Default::default()
        };
        rooms.report(pooled[0].keys[0].id, report, now_ms);
        let routing = Routing {
            strategy: RoutingStrategy::Weighted,
            sticky: false,
        };
        let mut t = pooled.clone();
        let started = Instant::now();
        let mut fits = 0u32;
        for _ in 0..rounds {
            b.arrange(routing, &mut t, None);
            for key in b.keys_in_order(&t[0]).into_iter().flatten().take(2) {
                fits += u32::from(rooms.check(key.id, 500, now_ms).is_ok());
            }
        }
        let ns = started.elapsed().as_nanos() / u128::from(rounds);
        println!("weighted + pool of 4 keys + headroom: {ns} ns per decision over a tier of 8");
        assert_eq!(fits, 2 * rounds);
    }
}
