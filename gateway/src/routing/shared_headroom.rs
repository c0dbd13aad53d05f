//! Provider headroom shared by every gateway on the same Redis (`REDIS_URL`): what one
//! gateway learns of a key from its provider's headers, the others know within a round
//! trip, so a key one gateway exhausted is passed by everywhere until its reset.
//!
//! Reports travel by Redis publish/subscribe on the channel `REDIS_KEY_PREFIX` +
//! `headroom`: nothing is stored, and no request waits on Redis — a report is handed to
//! a bounded queue (full: dropped and counted) that a background service publishes, and
//! the same service applies the other gateways' reports as they arrive. A key's report
//! is published when it runs out (or gets room back) at once, otherwise at most every
//! [`REPUBLISH`]. Weights and latency stay per gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::headroom::{Headrooms, Left, Room};
use crate::metrics;

/// Reports waiting to be published at most.
const QUEUE: usize = 1024;
/// A key whose state did not change between out and not out is republished at most this
/// often.
pub const REPUBLISH: Duration = Duration::from_millis(250);
/// Wait before connecting again after Redis failed.
const RECONNECT: Duration = Duration::from_secs(1);
/// Longest a connection (both of them, subscription included) may take to set up, and
/// one publication to be answered: past it the session starts again.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest message read from the channel (anything longer is not ours).
const MAX_MESSAGE: usize = 256;
/// Keys whose last publication is remembered at most.
const MAX_TRACKED: usize = 100_000;

/// The publishing side, held by [`Headrooms`].
pub struct Share {
    gateway: Uuid,
    tx: mpsc::Sender<String>,
    /// Per key: when it was last published, and whether it was out then.
    last: Mutex<HashMap<Uuid, (u64, bool)>>,
}

impl Share {
    /// Offers `room` of `key` for publication.
    pub fn offer(&self, key: Uuid, room: &Room, now_ms: u64) {
        let out = room.check(1, now_ms).is_err();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(&(at, was_out)) = last.get(&key) {
                if was_out == out && now_ms < at + REPUBLISH.as_millis() as u64 {
                    return;
                }
            }
            if last.len() >= MAX_TRACKED && !last.contains_key(&key) {
                last.clear();
            }
            last.insert(key, (now_ms, out));
        }
        if self.tx.try_send(encode(self.gateway, key, room)).is_err() {
            metrics::HEADROOM_SHARE_DROPPED.inc();
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `gateway key reported requests_left requests_reset tokens_left tokens_reset blocked`,
/// `-` for what is unknown.
fn encode(gateway: Uuid, key: Uuid, r: &Room) -> String {
    format!(
        "{gateway} {key} {} {} {} {} {} {}",
        r.reported_ms,
        opt(r.requests.map(|l| l.remaining)),
        opt(r.requests.map(|l| l.reset_ms)),
        opt(r.tokens.map(|l| l.remaining)),
        opt(r.tokens.map(|l| l.reset_ms)),
        opt(r.blocked_until_ms),
    )
}

fn decode(text: &str) -> Option<(Uuid, Uuid, Room)> {
    if text.len() > MAX_MESSAGE {
        return None;
    }
    let mut parts = text.split(' ');
    let gateway = parts.next()?.parse().ok()?;
    let key = parts.next()?.parse().ok()?;
    let mut num = || -> Option<Option<u64>> {
        match parts.next()? {
            "-" => Some(None),
            v => v.parse().ok().map(Some),
        }
    };
    let reported_ms = num()??;
    let left = |remaining: Option<u64>, reset_ms: Option<u64>| {
        Some(Left {
            remaining: remaining?,
            reset_ms: reset_ms?,
        })
    };
    let (rq, rr, tq, tr, blocked) = (num()?, num()?, num()?, num()?, num()?);
    Some((
        gateway,
        key,
        Room {
            requests: left(rq, rr),
            tokens: left(tq, tr),
            blocked_until_ms: blocked,
            reported_ms,
        },
    ))
}

/// Makes the publishing side and the service that carries reports both ways.
pub fn link(client: redis::Client, prefix: &str) -> (Share, Link) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let gateway = Uuid::now_v7();
    (
        Share {
            gateway,
            tx,
            last: Mutex::new(HashMap::new()),
        },
        Link {
            client,
            channel: format!("{prefix}headroom"),
            gateway,
            rx: tokio::sync::Mutex::new(rx),
            headrooms: std::sync::OnceLock::new(),
        },
    )
}

/// Publishes this gateway's reports and applies the others'.
pub struct Link {
    client: redis::Client,
    channel: String,
    gateway: Uuid,
    rx: tokio::sync::Mutex<mpsc::Receiver<String>>,
    /// Where the others' reports go (set once the headrooms exist).
    pub headrooms: std::sync::OnceLock<Arc<Headrooms>>,
}

impl Link {
    /// One connection's life: subscribe, then publish and apply until Redis fails.
    async fn session(&self, shutdown: &mut ShutdownWatch) -> redis::RedisResult<()> {
        let connect = async {
            let publisher = self.client.get_multiplexed_async_connection().await?;
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>((publisher, pubsub))
        };
        let (mut publisher, pubsub) = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| timed_out("connecting"))??;
        let mut messages = pubsub.into_on_message();
        let mut rx = self.rx.lock().await;
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(out) = out else { return Ok(()) };
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(&self.channel).arg(out);
                    let published = publish.query_async::<()>(&mut publisher);
                    tokio::time::timeout(CALL_TIMEOUT, published)
                        .await
                        .map_err(|_| timed_out("publishing"))??;
                }
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "subscription ended",
                        )));
                    };
                    let Ok(text) = msg.get_payload::<String>() else { continue };
                    match decode(&text) {
                        Some((from, key, room)) if from != self.gateway => {
                            if let Some(h) = self.headrooms.get() {
                                h.merge(key, room);
                            }
                        }
                        Some(_) => {}
                        None => metrics::HEADROOM_SHARE_DROPPED.inc(),
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "no answer in time", what.to_string()))
}

#[async_trait]
impl BackgroundService for Link {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if let Err(e) = self.session(&mut shutdown).await {
                tracing::warn!(error = %e, "shared provider headroom: Redis failed; reconnecting");
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_travel_whole_and_nonsense_is_refused() {
        let (g, k) = (Uuid::now_v7(), Uuid::now_v7());
        let room = Room {
            requests: Some(Left {
                remaining: 0,
                reset_ms: 9_000,
            }),
            tokens: None,
            blocked_until_ms: Some(7_000),
            reported_ms: 5_000,
        };
        assert_eq!(decode(&encode(g, k, &room)), Some((g, k, room)));
        assert_eq!(decode("x y 1 - - - - -"), None);
        assert_eq!(decode(&format!("{g} {k} 1 2 3")), None);
        assert_eq!(
            decode(&format!("{g} {k} 1 2 3 4 5 {}", "9".repeat(300))),
            None
        );
    }
}
