//! Coalescing: identical cacheable requests that arrive while the first is being answered
//! wait for it instead of each calling a provider. The first leads a flight; the others
//! follow it, receiving its answer as the leader receives it (a stream's events from the
//! start, a body once complete). A leader that fails before its first content releases
//! its followers to try on their own; a break after that breaks every follower's answer
//! too. Per gateway, bounded in flights and in followers per flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use super::key::Key;
use perpetuo_wire::ProviderKind;

/// Flights in the air at most; past it a request goes on its own.
pub const MAX_FLIGHTS: usize = 10_000;
/// Followers of one flight at most; past it a request goes on its own.
pub const MAX_FOLLOWERS: usize = 1_000;

/// A flight's identity: the cache key and the answer's shape (a stream follows a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub key: Key,
    pub streamed: bool,
}

/// What the leader's answer is, once it has one.
#[derive(Debug, Clone)]
pub struct Answering {
    pub kind: ProviderKind,
    pub served: String,
    pub status: u16,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// The leader is still asking its providers.
    Asking,
    Answering,
    /// The answer ended properly.
    Done,
    /// The answer broke after it started.
    Broken,
    /// The leader got no answer to share: followers go on their own.
    Released,
}

struct State {
    phase: Phase,
    answering: Option<Answering>,
    pieces: Vec<Bytes>,
}

/// One request in flight and what it has received so far.
pub struct Flight {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    followers: AtomicUsize,
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// This gateway's flights.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<FlightKey, Arc<Flight>>>,
}

/// A request's part in a flight.
pub enum Role {
    Lead(Leading),
    Follow(Following),
    /// No flight (the bounds are reached): the request goes on its own.
    Alone,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<FlightKey, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leads a new flight for `key`, or follows the one in the air.
    pub fn join(self: &Arc<Self>, key: FlightKey) -> Role {
        let mut map = self.lock();
        if let Some(flight) = map.get(&key) {
            if flight.followers.fetch_add(1, Ordering::AcqRel) >= MAX_FOLLOWERS {
                flight.followers.fetch_sub(1, Ordering::AcqRel);
                return Role::Alone;
            }
            return Role::Follow(Following {
                flight: flight.clone(),
                changes: flight.changed.subscribe(),
                next: 0,
            });
        }
        if map.len() >= MAX_FLIGHTS {
            return Role::Alone;
        }
        let (changed, _) = watch::channel(0);
        let flight = Arc::new(Flight {
            state: Mutex::new(State {
                phase: Phase::Asking,
                answering: None,
                pieces: Vec::new(),
            }),
            changed,
            followers: AtomicUsize::new(0),
        });
        map.insert(key, flight.clone());
        Role::Lead(Leading {
            flights: self.clone(),
            key,
            flight,
            ended: false,
        })
    }

    /// Flights in the air.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The leader's side: what it publishes as it goes. Dropped before [`Leading::done`], the
/// flight ends as released (no answer yet) or broken (an answer had started).
pub struct Leading {
    flights: Arc<Flights>,
    key: FlightKey,
    flight: Arc<Flight>,
    ended: bool,
}

impl Leading {
    /// The answer starts (a success: other answers are not shared).
    pub fn answering(&self, answering: Answering) {
        self.flight.update(|s| {
            s.phase = Phase::Answering;
            s.answering = Some(answering);
        });
    }

    /// One piece of the provider's answer (a stream's event; a body, whole).
    pub fn piece(&self, piece: Bytes) {
        self.flight.update(|s| s.pieces.push(piece));
    }

    /// Whether anyone follows.
    pub fn followed(&self) -> bool {
        self.flight.followers.load(Ordering::Acquire) > 0
    }

    /// The answer ended properly.
    pub fn done(mut self) {
        self.end(Phase::Done);
    }

    fn end(&mut self, phase: Phase) {
        if self.ended {
            return;
        }
        self.ended = true;
        {
            let mut map = self.flights.lock();
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        self.flight.update(|s| s.phase = phase);
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        let started = self.flight.lock().answering.is_some();
        self.end(if started {
            Phase::Broken
        } else {
            Phase::Released
        });
    }
}

/// A follower's side.
pub struct Following {
    flight: Arc<Flight>,
    changes: watch::Receiver<u64>,
    next: usize,
}

/// What a follower gets next.
pub enum Next {
    Pieces(Vec<Bytes>),
    Done,
    Broken,
}

impl Following {
    /// Waits for the leader's answer to start, until `deadline`: `None` when the leader
    /// has none to share (or it took too long) and the follower goes on its own.
    pub async fn answering(&mut self, deadline: tokio::time::Instant) -> Option<Answering> {
        loop {
            {
                let s = self.flight.lock();
                match s.phase {
                    Phase::Asking => {}
                    Phase::Released => return None,
                    _ => return s.answering.clone(),
                }
            }
            match tokio::time::timeout_at(deadline, self.changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The pieces not received yet, or how the answer ended once all were received.
    pub async fn next(&mut self) -> Next {
        loop {
            {
                let s = self.flight.lock();
                if s.pieces.len() > self.next {
                    let new = s.pieces[self.next..].to_vec();
                    self.next = s.pieces.len();
                    return Next::Pieces(new);
                }
                match s.phase {
                    Phase::Done => return Next::Done,
                    Phase::Broken | Phase::Released => return Next::Broken,
                    Phase::Asking | Phase::Answering => {}
                }
            }
            if self.changes.changed().await.is_err() {
                // The leader is gone without saying how it ended.
                return Next::Broken;
            }
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.flight.followers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Duration, Instant};

    fn key(n: u8) -> FlightKey {
        FlightKey {
            key: Key([n; 32]),
            streamed: true,
        }
    }

    fn answering() -> Answering {
        Answering {
            kind: ProviderKind::Openai,
            served: "m".into(),
            status: 200,
            content_type: "text/event-stream".into(),
        }
    }

    #[tokio::test]
    async fn followers_receive_every_piece_from_the_start_and_the_end() {
        let flights = Arc::new(Flights::default());
        let Role::Lead(lead) = flights.join(key(1)) else {
            panic!("first joins as leader")
        };
        let Role::Follow(mut early) = flights.join(key(1)) else {
            panic!("second follows")
        };
        lead.answering(answering());
        lead.piece(Bytes::from_static(b"a"));
        // A follower that joins after the first piece still gets it.
        let Role::Follow(mut late) = flights.join(key(1)) else {
            panic!("third follows")
        };
        lead.piece(Bytes::from_static(b"b"));
        let far = Instant::now() + Duration::from_secs(5);
        for f in [&mut early, &mut late] {
            assert_eq!(f.answering(far).await.unwrap().served, "m");
            let Next::Pieces(p) = f.next().await else {
                panic!("pieces")
            };
            assert_eq!(p, vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        }
        lead.done();
        assert!(matches!(early.next().await, Next::Done));
        assert!(flights.is_empty());
        // The next identical request leads a new flight.
        assert!(matches!(flights.join(key(1)), Role::Lead(_)));
    }

    #[tokio::test]
    async fn a_leader_without_an_answer_releases_and_a_broken_one_breaks() {
        let flights = Arc::new(Flights::default());
        let Role::Lead(lead) = flights.join(key(2)) else {
            panic!("leader")
        };
        let Role::Follow(mut f) = flights.join(key(2)) else {
            panic!("follower")
        };
        drop(lead);
        assert!(f
            .answering(Instant::now() + Duration::from_secs(5))
            .await
            .is_none());

        let Role::Lead(lead) = flights.join(key(3)) else {
            panic!("leader")
        };
        let Role::Follow(mut f) = flights.join(key(3)) else {
            panic!("follower")
        };
        lead.answering(answering());
        lead.piece(Bytes::from_static(b"a"));
        drop(lead);
        assert!(f
            .answering(Instant::now() + Duration::from_secs(5))
            .await
            .is_some());
        assert!(matches!(f.next().await, Next::Pieces(_)));
        assert!(matches!(f.next().await, Next::Broken));
    }

    #[tokio::test]
    async fn a_follower_stops_waiting_at_its_deadline_and_followers_are_bounded() {
        let flights = Arc::new(Flights::default());
        let Role::Lead(_lead) = flights.join(key(4)) else {
            panic!("leader")
        };
        let mut followers = Vec::new();
        for _ in 0..MAX_FOLLOWERS {
            match flights.join(key(4)) {
                Role::Follow(f) => followers.push(f),
                _ => panic!("follows within the bound"),
            }
        }
        assert!(matches!(flights.join(key(4)), Role::Alone));
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(followers[0].answering(soon).await.is_none());
        followers.clear();
        assert!(matches!(flights.join(key(4)), Role::Follow(_)));
    }
}
