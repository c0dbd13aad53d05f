//! What each provider key has left before its provider refuses it, as the provider's own
//! rate-limit headers say on every answer (OpenAI's `x-ratelimit-remaining-*` and
//! `x-ratelimit-reset-*`, Anthropic's `anthropic-ratelimit-*`, `retry-after` and
//! `retry-after-ms` on a 429). Routing passes a key by while its headroom cannot cover a
//! request — until the provider's reset time, not failing it and not counting it against
//! its breaker — so the request goes to the next key or entry instead of meeting the 429.
//!
//! Each request sent on a key takes its share off the key's last report at once (one
//! request, the request's estimated tokens), so requests in flight do not all aim at the
//! last unit of headroom; the next answer's headers replace the guess with the provider's
//! count. Times are wall-clock milliseconds, so a report means the same in every gateway
//! that shares it ([`super::shared_headroom`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pingora::http::ResponseHeader;
use uuid::Uuid;

/// The furthest ahead a reported reset or `Retry-After` is believed: a key is never
/// passed by for longer on one report, whatever a provider (or a server posing as one)
/// writes.
pub const MAX_RESET: Duration = Duration::from_secs(3600);
/// Keys whose headroom is remembered at most; past it, reports whose resets have passed
/// are forgotten first, then the oldest.
const MAX_KEYS: usize = 100_000;

/// One limit's room as a provider reported it: `remaining` until `reset_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub remaining: u64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub reset_ms: u64,
}

/// What one answer's headers said of its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub requests: Option<Left>,
    pub tokens: Option<Left>,
    /// Until when the provider asked not to be called (a 429's `Retry-After`).
    pub blocked_until_ms: Option<u64>,
}

/// The rate-limit headers [`Report::from_headers`] reads.
const RATE_HEADERS: [&str; 12] = [
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "retry-after-ms",
    "retry-after",
];

/// The values of an answer's [`RATE_HEADERS`] (the first of each name, as
/// `HeaderMap::get` gives it), found in one pass over the header instead of a lookup
/// (parse and hash of the name) per name: most answers carry none of them.
struct RateHeaders<'a>([Option<&'a str>; RATE_HEADERS.len()]);

impl<'a> RateHeaders<'a> {
    fn read(h: &'a ResponseHeader) -> Self {
        let mut found = [None; RATE_HEADERS.len()];
        for (name, value) in h.headers.iter() {
            let name = name.as_str();
            if !(name.starts_with("x-ratelimit-")
                || name.starts_with("anthropic-ratelimit-")
                || name.starts_with("retry-after"))
            {
                continue;
            }
            if let Some(i) = RATE_HEADERS.iter().position(|n| *n == name) {
                if found[i].is_none() {
                    found[i] = value.to_str().ok();
                }
            }
        }
        Self(found)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        let i = RATE_HEADERS.iter().position(|n| *n == name);
        debug_assert!(i.is_some(), "{name} is not among RATE_HEADERS");
        self.0[i?]
    }
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none() && self.blocked_until_ms.is_none()
    }

    /// Reads a provider's rate-limit headers (any kind's: the names do not overlap);
    /// `limited` is a 429, where a `Retry-After` blocks the key. Numbers past `u64` or
    /// resets past [`MAX_RESET`] are cut to the bound.
    pub fn from_headers(h: &ResponseHeader, limited: bool, now_ms: u64) -> Self {
        let found = RateHeaders::read(h);
        let text = |name: &str| found.get(name);
        let count = |name: &str| text(name).and_then(parse_count);
        let left = |remaining: Option<u64>, reset: Option<u64>| {
            remaining.map(|remaining| Left {
                remaining,
                // No reset said: the report holds for a minute (the providers' window).
                reset_ms: reset.unwrap_or(now_ms + 60_000),
            })
        };
        let openai_reset =
            |name: &str| text(name).and_then(|v| parse_duration(v).map(|d| add(now_ms, d)));
        let anthropic_reset = |name: &str| {
            text(name).and_then(|v| parse_timestamp_ms(v).map(|t| t.min(add(now_ms, MAX_RESET))))
        };
        let requests = left(
            count("x-ratelimit-remaining-requests"),
            openai_reset("x-ratelimit-reset-requests"),
        )
        .or_else(|| {
            left(
                count("anthropic-ratelimit-requests-remaining"),
                anthropic_reset("anthropic-ratelimit-requests-reset"),
            )
        });
        // Anthropic reports input and output tokens apart from their sum on some models:
        // the tightest one is what a request runs into.
        let tokens = [
            left(
                count("x-ratelimit-remaining-tokens"),
                openai_reset("x-ratelimit-reset-tokens"),
            ),
            left(
                count("anthropic-ratelimit-tokens-remaining"),
                anthropic_reset("anthropic-ratelimit-tokens-reset"),
            ),
            left(
                count("anthropic-ratelimit-input-tokens-remaining"),
                anthropic_reset("anthropic-ratelimit-input-tokens-reset"),
            ),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|l| l.remaining);
        let blocked_until_ms = limited
            .then(|| {
                text("retry-after-ms")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| Duration::from_millis(ms.min(MAX_RESET.as_millis() as f64) as u64))
                    .or_else(|| text("retry-after").and_then(|v| parse_retry_after(v, now_ms)))
                    .map(|d| add(now_ms, d))
            })
            .flatten();
        Self {
            requests,
            tokens,
            blocked_until_ms,
        }
    }
}

fn add(now_ms: u64, d: Duration) -> u64 {
    now_ms.saturating_add(d.min(MAX_RESET).as_millis() as u64)
}

fn parse_count(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || v.len() > 40 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: only an overflow fails, and a count past u64 is as good as endless.
    Some(v.parse::<u64>().unwrap_or(u64::MAX))
}

/// `Retry-After`: seconds (an HTTP date is read as "soon": one second).
fn parse_retry_after(v: &str, _now_ms: u64) -> Option<Duration> {
    let v = v.trim();
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_millis(
            (s.min(MAX_RESET.as_secs_f64()) * 1000.0) as u64,
        )),
        Ok(_) => None,
        Err(_) if !v.is_empty() && v.len() <= 64 => Some(Duration::from_secs(1)),
        Err(_) => None,
    }
}

/// A Go-style duration as OpenAI writes resets: `20ms`, `1s`, `6m0s`, `1h2m3.5s`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let mut rest = v.trim();
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let n: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    total
        .is_finite()
        .then(|| Duration::from_secs_f64(total.min(MAX_RESET.as_secs_f64())))
}

/// An RFC 3339 timestamp (Anthropic's resets) as epoch milliseconds.
fn parse_timestamp_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.len() > 64 {
        return None;
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Why a key cannot take a request now, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub until_ms: u64,
}

/// A key's room as this gateway knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    pub requests: Option<Left>,
    pub tokens: Option<Left>,
    pub blocked_until_ms: Option<u64>,
    /// When the last report arrived (wall clock), to keep the newer of two.
    pub reported_ms: u64,
}

impl Room {
    /// Whether a request of `tokens` fits now; else until when it does not.
    pub fn check(&self, tokens: u64, now_ms: u64) -> Result<(), Exhausted> {
        let mut until = None;
        if let Some(b) = self.blocked_until_ms.filter(|&b| b > now_ms) {
            until = Some(b);
        }
        if let Some(l) = self
            .requests
            .filter(|l| l.reset_ms > now_ms && l.remaining == 0)
        {
            until = Some(until.map_or(l.reset_ms, |u: u64| u.max(l.reset_ms)));
        }
        if let Some(l) = self
            .tokens
            .filter(|l| l.reset_ms > now_ms && l.remaining < tokens.max(1))
        {
            until = Some(until.map_or(l.reset_ms, |u: u64| u.max(l.reset_ms)));
        }
        match until {
            Some(until_ms) => Err(Exhausted { until_ms }),
            None => Ok(()),
        }
    }

    /// Whether everything this room says has passed: nothing left to remember.
    fn expired(&self, now_ms: u64) -> bool {
        self.blocked_until_ms.is_none_or(|b| b <= now_ms)
            && self.requests.is_none_or(|l| l.reset_ms <= now_ms)
            && self.tokens.is_none_or(|l| l.reset_ms <= now_ms)
    }
}

pub use perpetuo_core::clock::unix_ms as now_ms;

/// Whose a key is, for the status this gateway publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub entry_id: Uuid,
    pub workspace_id: Uuid,
    /// When this gateway last sent a request on the key (wall clock).
    pub used_ms: u64,
}

/// Every key's room, per gateway (and, through Redis, the reports of the others), and
/// the keys this gateway used lately.
#[derive(Default)]
pub struct Headrooms {
    rooms: Mutex<HashMap<Uuid, Room>>,
    used: Mutex<HashMap<Uuid, Owner>>,
    /// Where this gateway's reports go for the others (with `REDIS_URL`).
    share: Option<super::shared_headroom::Share>,
}

impl Headrooms {
    /// Headrooms whose reports are also published to the other gateways.
    pub fn shared(share: super::shared_headroom::Share) -> Self {
        Self {
            share: Some(share),
            ..Self::default()
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Room>> {
        // A poisoned map is still a map: the panic happened elsewhere.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` can take a request of `tokens` now.
    pub fn check(&self, key: Uuid, tokens: u64, now_ms: u64) -> Result<(), Exhausted> {
        match self.rooms().get(&key) {
            Some(room) => room.check(tokens, now_ms),
            None => Ok(()),
        }
    }

    /// Whether what is known of `key` depends on the request's size (a token count is
    /// known and not yet reset): only then is the request's estimate worth making.
    pub fn counts_tokens(&self, key: Uuid, now_ms: u64) -> bool {
        self.rooms()
            .get(&key)
            .and_then(|r| r.tokens)
            .is_some_and(|l| l.reset_ms > now_ms)
    }

    /// A request of `tokens` is sent on `key` (of `entry_id`, in `workspace_id`): it is
    /// taken off the key's room, and the key is among those this gateway reports on.
    pub fn sent(&self, key: Uuid, entry_id: Uuid, workspace_id: Uuid, tokens: u64, now_ms: u64) {
        self.take(key, tokens, now_ms);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= MAX_KEYS && !used.contains_key(&key) {
            let oldest = used.iter().min_by_key(|(_, o)| o.used_ms).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                used.remove(&oldest);
            }
        }
        used.insert(
            key,
            Owner {
                entry_id,
                workspace_id,
                used_ms: now_ms,
            },
        );
    }

    /// The keys used since `since_ms`, with whose they are; the others are forgotten.
    pub fn used_since(&self, since_ms: u64) -> Vec<(Uuid, Owner)> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, o| o.used_ms >= since_ms);
        used.iter().map(|(k, o)| (*k, *o)).collect()
    }

    /// Takes one request of `tokens` off `key`'s last report, as it is sent.
    pub fn take(&self, key: Uuid, tokens: u64, now_ms: u64) {
        if let Some(room) = self.rooms().get_mut(&key) {
            if let Some(l) = room.requests.as_mut().filter(|l| l.reset_ms > now_ms) {
                l.remaining = l.remaining.saturating_sub(1);
            }
            if let Some(l) = room.tokens.as_mut().filter(|l| l.reset_ms > now_ms) {
                l.remaining = l.remaining.saturating_sub(tokens);
            }
        }
    }

    /// Records what an answer on `key` reported; returns the room as it now stands when
    /// the report changed anything (for sharing), `None` for an empty report.
    pub fn report(&self, key: Uuid, report: Report, now_ms: u64) -> Option<Room> {
        if report.is_empty() {
            return None;
        }
        let mut rooms = self.rooms();
        if rooms.len() >= MAX_KEYS && !rooms.contains_key(&key) {
            rooms.retain(|_, r| !r.expired(now_ms));
            if rooms.len() >= MAX_KEYS {
                let oldest = rooms
                    .iter()
                    .min_by_key(|(_, r)| r.reported_ms)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    rooms.remove(&oldest);
                }
            }
        }
        let room = rooms.entry(key).or_default();
        room.requests = report.requests.or(room.requests);
        room.tokens = report.tokens.or(room.tokens);
        if let Some(b) = report.blocked_until_ms {
            room.blocked_until_ms = Some(room.blocked_until_ms.map_or(b, |old| old.max(b)));
        }
        room.reported_ms = now_ms;
        let room = *room;
        drop(rooms);
        if let Some(share) = &self.share {
            share.offer(key, &room, now_ms);
        }
        Some(room)
    }

    /// Takes a room another gateway shared, unless this one has heard newer.
    pub fn merge(&self, key: Uuid, shared: Room) {
        let mut rooms = self.rooms();
        if rooms.len() >= MAX_KEYS && !rooms.contains_key(&key) {
            return;
        }
        let room = rooms.entry(key).or_default();
        if shared.reported_ms >= room.reported_ms {
            *room = shared;
        }
    }

    /// The room of `key`, when anything of it is known and current.
    pub fn room(&self, key: Uuid, now_ms: u64) -> Option<Room> {
        self.rooms()
            .get(&key)
            .filter(|r| !r.expired(now_ms))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pairs: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        for (k, v) in pairs {
            h.insert_header(k.to_string(), v.to_string()).unwrap();
        }
        h
    }

    #[test]
    fn openai_durations() {
        let ms = |v| parse_duration(v).map(|d| d.as_millis());
        assert_eq!(ms("20ms"), Some(20));
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("6m0s"), Some(360_000));
        assert_eq!(ms("59m3.5s"), Some(3_543_500));
        assert_eq!(ms("1h2m3.5s"), Some(3_600_000), "cut at an hour");
        assert_eq!(ms("0.5s"), Some(500));
        assert_eq!(ms("99999h"), Some(MAX_RESET.as_millis()));
        assert_eq!(ms(""), None);
        assert_eq!(ms("5 apples"), None);
        assert_eq!(ms("s"), None);
    }

    #[test]
    fn openai_headers() {
        let now = 1_000_000;
        let h = header(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "1500"),
            ("x-ratelimit-reset-tokens", "850ms"),
        ]);
        let r = Report::from_headers(&h, false, now);
        assert_eq!(
            r.requests,
            Some(Left {
                remaining: 0,
                reset_ms: now + 2000
            })
        );
        assert_eq!(
            r.tokens,
            Some(Left {
                remaining: 1500,
                reset_ms: now + 850
            })
        );
        assert_eq!(r.blocked_until_ms, None);
    }

    #[test]
    fn anthropic_headers_take_the_tightest_tokens() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let h = header(&[
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "9000"),
            ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:10Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "400"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-01-01T00:00:05Z",
            ),
            ("retry-after", "7"),
        ]);
        let r = Report::from_headers(&h, true, now);
        assert_eq!(
            r.requests,
            Some(Left {
                remaining: 49,
                reset_ms: now + 30_000
            })
        );
        assert_eq!(
            r.tokens,
            Some(Left {
                remaining: 400,
                reset_ms: now + 5_000
            })
        );
        assert_eq!(r.blocked_until_ms, Some(now + 7_000));
        // Retry-After only blocks on a 429.
        assert_eq!(Report::from_headers(&h, false, now).blocked_until_ms, None);
    }

    #[test]
    fn absurd_numbers_are_bounded() {
        let now = 5_000;
        let h = header(&[
            (
                "x-ratelimit-remaining-requests",
                "99999999999999999999999999",
            ),
            ("x-ratelimit-reset-requests", "100000000h"),
            ("x-ratelimit-remaining-tokens", "-4"),
            ("retry-after", "1e300"),
            ("anthropic-ratelimit-requests-reset", "9999-12-31T23:59:59Z"),
        ]);
        let r = Report::from_headers(&h, true, now);
        assert_eq!(
            r.requests,
            Some(Left {
                remaining: u64::MAX,
                reset_ms: now + MAX_RESET.as_millis() as u64
            })
        );
        assert_eq!(r.tokens, None, "a negative count is no count");
        assert_eq!(r.blocked_until_ms, Some(now + MAX_RESET.as_millis() as u64));
        let h = header(&[("retry-after-ms", "NaN"), ("retry-after", "2")]);
        assert_eq!(
            Report::from_headers(&h, true, now).blocked_until_ms,
            Some(now + 2_000)
        );
    }

    #[test]
    fn a_key_out_of_requests_is_passed_by_until_its_reset() {
        let rooms = Headrooms::default();
        let key = Uuid::now_v7();
        let now = 10_000;
        assert_eq!(rooms.check(key, 100, now), Ok(()));
        let report = Report {
            requests: Some(Left {
                remaining: 1,
                reset_ms: now + 2_000,
            }),
            tokens: Some(Left {
                remaining: 500,
                reset_ms: now + 1_000,
            }),
            blocked_until_ms: None,
        };
        rooms.report(key, report, now);
        assert_eq!(rooms.check(key, 100, now), Ok(()));
        assert_eq!(
            rooms.check(key, 600, now),
            Err(Exhausted {
                until_ms: now + 1_000
            }),
            "more tokens than are left"
        );
        rooms.take(key, 100, now);
        assert_eq!(
            rooms.check(key, 1, now),
            Err(Exhausted {
                until_ms: now + 2_000
            }),
            "the request in flight took the last one"
        );
        assert_eq!(rooms.check(key, 1, now + 2_000), Ok(()), "reset");
        assert_eq!(rooms.room(key, now + 2_000), None);
    }

    #[test]
    fn a_shared_room_replaces_only_an_older_one() {
        let rooms = Headrooms::default();
        let key = Uuid::now_v7();
        let mine = Report {
            requests: Some(Left {
                remaining: 5,
                reset_ms: 9_000,
            }),
            ..Report::default()
        };
        rooms.report(key, mine, 2_000);
        let older = Room {
            requests: Some(Left {
                remaining: 0,
                reset_ms: 9_000,
            }),
            reported_ms: 1_000,
            ..Room::default()
        };
        rooms.merge(key, older);
        assert_eq!(rooms.check(key, 1, 3_000), Ok(()));
        let newer = Room {
            reported_ms: 2_500,
            ..older
        };
        rooms.merge(key, newer);
        assert_eq!(
            rooms.check(key, 1, 3_000),
            Err(Exhausted { until_ms: 9_000 })
        );
    }
}
