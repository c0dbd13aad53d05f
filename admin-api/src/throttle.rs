//! Login and signup throttling, per client IP and per account, and invitation
//! throttling, per inviter and per workspace: attempts are counted in fixed windows (a
//! minute, an hour for invitations) held in bounded in-process caches (moka), so memory
//! stays bounded whatever the number of addresses or emails tried. Limits are per replica.
//! The client IP is `extract::ClientIp` (the TCP peer, or the forwarded client behind
//! `TRUSTED_PROXIES`), counted by `forwarded::client_group` (IPv6 per /64).

use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use perpetuo_core::forwarded::client_group;

/// How many keys each counter remembers; the least used are dropped beyond that.
pub const MAX_KEYS: u64 = 100_000;
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// At most `limit` attempts per key per window (0: no limit).
pub struct Throttle<K> {
    limit: u32,
    window: Duration,
    windows: Cache<K, Window>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Throttle<K> {
    pub fn new(limit: u32, window: Duration, max_keys: u64) -> Self {
        Self {
            limit,
            window,
            windows: Cache::builder()
                .max_capacity(max_keys)
                .time_to_live(window)
                .build(),
        }
    }

    /// Counts an attempt for `key`, or refuses it with the time until the window ends.
    pub fn hit(&self, key: K) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut verdict = Ok(());
        self.windows.entry(key).and_compute_with(|current| {
            let w = match current.map(|e| e.into_value()) {
                Some(w) if now.duration_since(w.start) < self.window => w,
                _ => Window {
                    start: now,
                    count: 0,
                },
            };
            if w.count >= self.limit {
                verdict = Err(self.window.saturating_sub(now.duration_since(w.start)));
                Op::Nop
            } else {
                Op::Put(Window {
                    count: w.count + 1,
                    ..w
                })
            }
        });
        verdict
    }

    /// Takes back an attempt counted by `hit`.
    pub fn refund(&self, key: K) {
        if self.limit == 0 {
            return;
        }
        self.windows
            .entry(key)
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some(w) if w.count > 0 => Op::Put(Window {
                    count: w.count - 1,
                    ..w
                }),
                _ => Op::Nop,
            });
    }
}

/// The two throttles of the credential routes.
pub struct AuthThrottle {
    per_ip: Throttle<IpAddr>,
    per_account: Throttle<String>,
}

/// An attempt admitted by both throttles. Only an attempt marked `failed` stays counted
/// against the account: one that succeeds or ends in a server-side error gives its place
/// back when dropped. So only failures use up an account's allowance, while the check
/// still happens before any password is hashed, and attempts in flight count too.
pub struct Attempt<'a> {
    throttle: &'a AuthThrottle,
    account: Option<String>,
}

impl Attempt<'_> {
    /// Wrong password, or an email that cannot be used: keep it counted.
    pub fn failed(mut self) {
        self.account = None;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(account) = self.account.take() {
            self.throttle.per_account.refund(account);
        }
    }
}

impl AuthThrottle {
    pub fn new(per_ip_per_minute: u32, per_account_per_minute: u32) -> Self {
        Self {
            per_ip: Throttle::new(per_ip_per_minute, WINDOW, MAX_KEYS),
            per_account: Throttle::new(per_account_per_minute, WINDOW, MAX_KEYS),
        }
    }

    /// Admits one attempt from `ip` that names no account yet (a password-reset token),
    /// counted against the same per-IP allowance as logins.
    pub fn attempt_from(&self, ip: IpAddr) -> Result<(), Duration> {
        self.per_ip.hit(client_group(ip))
    }

    /// Admits one credential attempt from `ip` on `account` (a normalised email), or
    /// refuses it with the time to wait.
    pub fn attempt(&self, ip: IpAddr, account: &str) -> Result<Attempt<'_>, Duration> {
        self.per_ip.hit(client_group(ip))?;
        self.per_account.hit(account.to_string())?;
        Ok(Attempt {
            throttle: self,
            account: Some(account.to_string()),
        })
    }
}

/// Invitations are counted per hour.
pub const INVITATION_WINDOW: Duration = Duration::from_secs(3600);

/// Invitations per inviter (across workspaces) and per workspace, so no account or
/// workspace turns the server into a mail cannon.
pub struct InvitationThrottle {
    per_inviter: Throttle<uuid::Uuid>,
    per_workspace: Throttle<uuid::Uuid>,
}

impl InvitationThrottle {
    pub fn new(per_inviter_per_hour: u32, per_workspace_per_hour: u32) -> Self {
        Self {
            per_inviter: Throttle::new(per_inviter_per_hour, INVITATION_WINDOW, MAX_KEYS),
            per_workspace: Throttle::new(per_workspace_per_hour, INVITATION_WINDOW, MAX_KEYS),
        }
    }

    /// Counts one invitation sent by `inviter` in `workspace`, or refuses it (counting
    /// nothing) with the time to wait.
    pub fn admit(&self, inviter: uuid::Uuid, workspace: uuid::Uuid) -> Result<(), Duration> {
        self.per_inviter.hit(inviter)?;
        if let Err(wait) = self.per_workspace.hit(workspace) {
            self.per_inviter.refund(inviter);
            return Err(wait);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_per_key_and_refunds() {
        let t = Throttle::new(2, Duration::from_secs(60), 10);
        assert!(t.hit("a").is_ok());
        assert!(t.hit("a").is_ok());
        let wait = t.hit("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert!(t.hit("b").is_ok(), "keys are counted apart");
        t.refund("a");
        assert!(t.hit("a").is_ok());
        assert!(t.hit("a").is_err());
    }

    #[test]
    fn a_new_window_starts_afresh() {
        let t = Throttle::new(1, Duration::ZERO, 10);
        assert!(t.hit(1).is_ok());
        assert!(t.hit(1).is_ok());
    }

    #[test]
    fn only_failed_attempts_stay_counted_against_the_account() {
        let t = AuthThrottle::new(0, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            drop(t.attempt(ip, "a@example.com").unwrap());
        }
        t.attempt(ip, "a@example.com").unwrap().failed();
        let held = t.attempt(ip, "a@example.com").unwrap();
        assert!(
            t.attempt(ip, "a@example.com").is_err(),
            "an attempt in flight counts"
        );
        held.failed();
        assert!(t.attempt(ip, "a@example.com").is_err());
        assert!(t.attempt(ip, "b@example.com").is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let t = Throttle::new(0, Duration::from_secs(60), 10);
        for _ in 0..100 {
            assert!(t.hit(1).is_ok());
        }
    }

    #[test]
    fn invitations_are_counted_per_inviter_and_per_workspace() {
        let t = InvitationThrottle::new(3, 2);
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let (w1, w2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert!(t.admit(a, w1).is_ok());
        assert!(t.admit(a, w1).is_ok());
        let wait = t.admit(a, w1).unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= INVITATION_WINDOW);
        assert!(t.admit(b, w1).is_err(), "w1 has had two");
        // The workspace's refusal did not use up a's allowance: one more elsewhere.
        assert!(t.admit(a, w2).is_ok());
        assert!(t.admit(a, w2).is_err(), "a has had three");
        assert!(t.admit(b, w2).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let t = AuthThrottle::new(1, 0);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        drop(t.attempt(a, "x@example.com").unwrap());
        assert!(t.attempt(b, "x@example.com").is_err(), "same /64");
        assert!(t.attempt(c, "x@example.com").is_ok(), "another /64");
    }
}
