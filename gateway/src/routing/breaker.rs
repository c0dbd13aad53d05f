//! Which attempt failures fall back, and the per-entry circuit breaker that skips an
//! entry after repeated failures and lets one probe through after a cool-down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::outcome::ErrorKind;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer could be asked for: see [`Connect`].
    Connect(Connect),
    Timeout,
    Status(u16),
    /// The response broke before its first content.
    EarlyEnd,
    /// The stream reported an error before its first content.
    StreamError,
    /// The entry's address is private or loopback and `ALLOWED_PRIVATE_UPSTREAMS` does
    /// not allow it.
    RefusedByPolicy,
}

impl Failure {
    /// Whether the failure says something about the entry (and so counts toward its
    /// breaker). A 403 is often about the request — a model this key may not use — and a
    /// name a client chose must never take an entry out of service for everyone.
    pub fn counts_against_entry(self) -> bool {
        self != Failure::Status(403)
    }

    /// Whether the provider refused the key rather than failed: its rate limit, its
    /// authorisation. Another key of the same entry may still be served.
    pub fn is_the_keys(self) -> bool {
        matches!(self, Failure::Status(401 | 403 | 429))
    }

    /// The failure's kind: an attempt row's `error_kind`, the fallbacks metric's reason.
    pub fn kind(self) -> ErrorKind {
        match self {
            Failure::Connect(_) => ErrorKind::Connect,
            Failure::Timeout => ErrorKind::Timeout,
            Failure::Status(429) => ErrorKind::Status429,
            Failure::Status(401 | 403) => ErrorKind::ProviderAuth,
            Failure::Status(_) => ErrorKind::Status5xx,
            Failure::EarlyEnd => ErrorKind::EarlyEnd,
            Failure::StreamError => ErrorKind::StreamError,
            Failure::RefusedByPolicy => ErrorKind::UpstreamRefusedByPolicy,
        }
    }
}

/// Why no connection carried the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// The provider's host name did not resolve.
    Unresolvable,
    Refused,
    TimedOut,
    Tls,
    /// Any other failure to connect, or to write the request on the connection.
    Failed,
}

impl Failure {
    /// The failure's class as a client may read it: never the provider's own words, its
    /// address or anything secret.
    pub fn cause(self) -> String {
        let text = match self {
            Failure::Connect(Connect::Unresolvable) => "host name did not resolve",
            Failure::Connect(Connect::Refused) => "connection refused",
            Failure::Connect(Connect::TimedOut) => "connect timeout",
            Failure::Connect(Connect::Tls) => "TLS handshake failed",
            Failure::Connect(Connect::Failed) => "connection failed",
            Failure::Timeout => "timeout",
            Failure::Status(status) => return format!("status {status}"),
            Failure::EarlyEnd => "answer ended before its first content",
            Failure::StreamError => "stream error before its first content",
            Failure::RefusedByPolicy => "address not allowed by ALLOWED_PRIVATE_UPSTREAMS",
        };
        text.to_string()
    }
}

/// Whether a provider status means "try the next entry" (429, 5xx, provider auth failure).
/// Other 4xx are the client's fault and are returned as they are.
pub fn should_fall_back(status: u16) -> bool {
    status == 429 || status == 401 || status == 403 || status >= 500
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down has ended; `probe_until` is set while one probe is out.
    HalfOpen {
        probe_until: Option<Instant>,
    },
}

/// Per-entry circuit breaker: after `threshold` consecutive failures (or a 429 with
/// `Retry-After`) the entry is skipped until the cool-down ends; then one probe goes
/// through, and its outcome closes or re-opens the breaker. A probe that never reports
/// (its client left, its task was dropped) frees the half-open slot when its
/// [`Admission`] is dropped, and a probe older than `probe_timeout` no longer blocks
/// the next one: no entry can stay skipped for ever.
pub struct Breakers {
    states: Mutex<HashMap<Uuid, State>>,
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
}

pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Leave to try an entry now. For a half-open breaker's probe, dropping it without
/// reporting an outcome hands the probe to the next request.
#[must_use]
pub struct Admission<'a> {
    breakers: &'a Breakers,
    id: Uuid,
    probe: bool,
}

impl Admission<'_> {
    pub fn success(mut self) {
        self.probe = false;
        self.breakers.success(self.id);
    }

    /// Records a failure; true when it opened the breaker.
    pub fn failure(mut self, now: Instant, retry_after: Option<Duration>) -> bool {
        self.probe = false;
        self.breakers.failure(self.id, now, retry_after)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breakers.release_probe(self.id);
        }
    }
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            threshold: threshold.max(1),
            cooldown,
            probe_timeout: cooldown,
        }
    }

    /// How long one probe may stay out before another is let through.
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Whether `id` may be tried now (claims the probe of a half-open breaker).
    pub fn allow(&self, id: Uuid, now: Instant) -> Option<Admission<'_>> {
        // A poisoned lock (a panic while it was held) fails open: routing keeps working
        // without breakers rather than refusing every request.
        let Ok(mut states) = self.states.lock() else {
            return Some(self.admission(id, false));
        };
        let state = states.entry(id).or_insert(State::Closed { failures: 0 });
        let probe = State::HalfOpen {
            probe_until: Some(now + self.probe_timeout),
        };
        match *state {
            State::Closed { .. } => Some(self.admission(id, false)),
            State::Open { until } if now >= until => {
                *state = probe;
                Some(self.admission(id, true))
            }
            State::Open { .. } => None,
            State::HalfOpen {
                probe_until: Some(t),
            } if now < t => None,
            State::HalfOpen { .. } => {
                *state = probe;
                Some(self.admission(id, true))
            }
        }
    }

    fn admission(&self, id: Uuid, probe: bool) -> Admission<'_> {
        Admission {
            breakers: self,
            id,
            probe,
        }
    }

    /// How `id`'s breaker stands now, as the status table names it: `closed`, `open`
    /// (skipped until its cool-down ends) or `half_open` (the next request probes it).
    pub fn state(&self, id: Uuid, now: Instant) -> &'static str {
        let Ok(states) = self.states.lock() else {
            return "closed";
        };
        match states.get(&id) {
            None | Some(State::Closed { .. }) => "closed",
            Some(State::Open { until }) if now < *until => "open",
            Some(_) => "half_open",
        }
    }

    fn release_probe(&self, id: Uuid) {
        if let Ok(mut states) = self.states.lock() {
            if let Some(state @ State::HalfOpen { .. }) = states.get_mut(&id) {
                *state = State::HalfOpen { probe_until: None };
            }
        }
    }

    pub fn success(&self, id: Uuid) {
        if let Ok(mut states) = self.states.lock() {
            states.insert(id, State::Closed { failures: 0 });
        }
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn failure(&self, id: Uuid, now: Instant, retry_after: Option<Duration>) -> bool {
        let Ok(mut states) = self.states.lock() else {
            return false;
        };
        let state = states.entry(id).or_insert(State::Closed { failures: 0 });
        let open_for = |d: Duration| State::Open { until: now + d };
        let (next, opened) = match (*state, retry_after) {
            (_, Some(ra)) => (
                open_for(ra.min(MAX_RETRY_AFTER)),
                !matches!(*state, State::Open { .. }),
            ),
            (State::Closed { failures }, None) if failures + 1 >= self.threshold => {
                (open_for(self.cooldown), true)
            }
            (State::Closed { failures }, None) => (
                State::Closed {
                    failures: failures + 1,
                },
                false,
            ),
            (State::HalfOpen { .. }, None) => (open_for(self.cooldown), true),
            (open @ State::Open { .. }, None) => (open, false),
        };
        *state = next;
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_rules() {
        for s in [429, 500, 502, 503, 504, 529, 401, 403] {
            assert!(should_fall_back(s), "{s}");
        }
        for s in [200, 400, 404, 409, 413, 422] {
            assert!(!should_fall_back(s), "{s}");
        }
    }

    #[test]
    fn breaker_opens_cools_down_and_probes_once() {
        let b = Breakers::new(2, Duration::from_secs(10));
        let id = Uuid::now_v7();
        let t0 = Instant::now();
        assert!(!b.allow(id, t0).unwrap().failure(t0, None));
        assert!(
            b.allow(id, t0).unwrap().failure(t0, None),
            "second failure opens"
        );
        assert!(b.allow(id, t0 + Duration::from_secs(5)).is_none());
        let later = t0 + Duration::from_secs(11);
        let probe = b.allow(id, later).expect("one probe after the cool-down");
        assert!(b.allow(id, later).is_none(), "only one");
        assert!(probe.failure(later, None), "a failed probe re-opens");
        assert!(b.allow(id, later + Duration::from_secs(1)).is_none());
        let again = later + Duration::from_secs(11);
        b.allow(id, again).unwrap().success();
        assert!(
            b.allow(id, again).is_some() && b.allow(id, again).is_some(),
            "closed after a good probe"
        );
        assert!(
            b.failure(id, again, Some(Duration::from_secs(3))),
            "429 + Retry-After opens at once"
        );
        assert!(b.allow(id, again + Duration::from_secs(2)).is_none());
        assert!(b.allow(id, again + Duration::from_secs(3)).is_some());
    }

    #[test]
    fn an_abandoned_or_endless_probe_does_not_skip_the_entry_for_ever() {
        let b =
            Breakers::new(1, Duration::from_secs(10)).with_probe_timeout(Duration::from_secs(60));
        let id = Uuid::now_v7();
        let t0 = Instant::now();
        assert!(b.allow(id, t0).unwrap().failure(t0, None));
        let t1 = t0 + Duration::from_secs(11);
        // The probe's client leaves: its admission is dropped without an outcome.
        drop(b.allow(id, t1).expect("probe"));
        let probe = b.allow(id, t1).expect("the next request probes");
        // This probe never reports: another may go once the probe timeout has passed.
        assert!(b.allow(id, t1 + Duration::from_secs(59)).is_none());
        let next = b
            .allow(id, t1 + Duration::from_secs(60))
            .expect("probe deadline");
        next.success();
        drop(probe);
        assert!(b.allow(id, t1 + Duration::from_secs(61)).is_some());
    }
}
