//! The failed-lookup budget: how many key lookups that reach the database and find no
//! usable key one client address may cause per window. Past it, lookups that would reach
//! the database are refused without one until the window ends; keys already cached
//! (valid or unknown) are still answered from the cache.
//!
//! The address is the request's client (behind a trusted proxy, from `X-Forwarded-For`),
//! grouped as a provider hands addresses out ([`client_group`]): an IPv4 address alone,
//! an IPv6 address by its /64 (one subscriber's network). A lookup reserves a unit of
//! budget before it reaches the database, so concurrent lookups cannot overshoot it; a
//! lookup that finds a valid key, or cannot reach the database, gives its unit back.
//! Requests waiting for the same key's lookup share it and reserve nothing: only the one
//! that reads the database is counted, so a burst of first requests with a valid key is
//! never refused by the budget.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perpetuo_core::forwarded::client_group;

/// The budget's window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Address groups tracked at once. Past it the cache evicts the least used groups, and a
/// group it does not admit goes unbudgeted (every such lookup still costs the database
/// one indexed read).
const MAX_GROUPS: u64 = 100_000;

struct Window {
    ends: Instant,
    used: AtomicU32,
}

/// Failed lookups per address group and window.
pub struct Budget {
    per_window: u32,
    groups: moka::sync::Cache<IpAddr, Arc<Window>>,
}

/// A unit of an address's budget, held while its lookup runs. Dropped, it stays spent;
/// [`Reservation::refund`] gives it back.
pub struct Reservation(Option<Arc<Window>>);

impl Reservation {
    /// The lookup did not fail for want of a key: the unit is not spent.
    pub fn refund(mut self) {
        if let Some(w) = self.0.take() {
            let _ = w
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

impl Budget {
    /// `per_window` failed lookups per address group and [`WINDOW`]; 0 turns it off.
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window,
            groups: moka::sync::Cache::builder()
                .max_capacity(MAX_GROUPS)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    /// Reserves one lookup for `client` at `now`, or says how long until its window
    /// ends.
    pub fn reserve(&self, client: IpAddr, now: Instant) -> Result<Reservation, Duration> {
        if self.per_window == 0 {
            return Ok(Reservation(None));
        }
        let group = client_group(client);
        let fresh = || {
            Arc::new(Window {
                ends: now + WINDOW,
                used: AtomicU32::new(0),
            })
        };
        let mut window = self.groups.get_with(group, fresh);
        if now >= window.ends {
            // Expired but not yet evicted: a new window starts.
            self.groups.invalidate(&group);
            window = self.groups.get_with(group, fresh);
        }
        let taken = window
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.per_window).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Reservation(Some(window))),
            Err(_) => Err(window.ends.saturating_duration_since(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv6_64_shares_one_budget_and_mapped_ipv4_is_its_ipv4() {
        let budget = Budget::new(1);
        let now = Instant::now();
        drop(budget.reserve(ip("2001:db8:1:2::1"), now).unwrap());
        assert!(budget.reserve(ip("2001:db8:1:2:ffff::7"), now).is_err());
        assert!(budget.reserve(ip("2001:db8:1:3::1"), now).is_ok());
        drop(budget.reserve(ip("192.0.2.7"), now).unwrap());
        assert!(budget.reserve(ip("::ffff:192.0.2.7"), now).is_err());
    }

    #[test]
    fn spent_reservations_exhaust_the_window_and_refunds_do_not() {
        let budget = Budget::new(3);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        budget.reserve(a, t0).unwrap().refund();
        for _ in 0..3 {
            drop(budget.reserve(a, t0).unwrap());
        }
        let wait = budget.reserve(a, t0 + Duration::from_secs(10)).err();
        assert_eq!(wait, Some(Duration::from_secs(50)));
        // Another address has a budget of its own.
        assert!(budget.reserve(ip("192.0.2.2"), t0).is_ok());
        // A new window starts when the old one ends.
        assert!(budget.reserve(a, t0 + WINDOW).is_ok());
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_budget() {
        let budget = Arc::new(Budget::new(50));
        let now = Instant::now();
        let granted: usize = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter_map(|_| budget.reserve(ip("2001:db8::1"), now).ok())
                        .map(drop)
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(granted, 50);
    }

    #[test]
    fn zero_turns_the_budget_off() {
        let budget = Budget::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            drop(budget.reserve(ip("192.0.2.1"), now).unwrap());
        }
    }
}
