//! Writing progressive response bodies: SSE event framing, pacing, deliberate cuts, and
//! the optional awkward fragmentation that exercises a client's SSE parser.
//!
//! A wire-format module describes a body as a list of [`Step`]s; `body` turns that
//! list into a streamed HTTP body that waits `chunk_delay` between events, and, when
//! fragmentation is on, regroups the bytes with a [`Fragmenter`].

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};

use crate::record::BodyGuard;

/// The event that ends an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// How long a body waits before cutting the connection, so that whatever it wrote
/// before (headers included) has been flushed to the client.
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// A `data:`-only SSE event: `data: <payload>\n\n`.
pub fn data(payload: &[u8]) -> Bytes {
    let mut event = BytesMut::with_capacity(payload.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(payload);
    event.extend_from_slice(b"\n\n");
    event.freeze()
}

/// A `data:`-only SSE event with CRLF line endings, as Google sends them:
/// `data: <payload>\r\n\r\n`.
pub fn data_crlf(payload: &[u8]) -> Bytes {
    let mut event = BytesMut::with_capacity(payload.len() + 10);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(payload);
    event.extend_from_slice(b"\r\n\r\n");
    event.freeze()
}

/// A named SSE event: `event: <name>\ndata: <payload>\n\n`.
pub fn named_event(name: &str, payload: &[u8]) -> Bytes {
    let mut event = BytesMut::with_capacity(name.len() + payload.len() + 16);
    event.extend_from_slice(b"event: ");
    event.extend_from_slice(name.as_bytes());
    event.extend_from_slice(b"\n");
    event.extend_from_slice(&data(payload));
    event.freeze()
}

/// One step of a progressive body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The bytes of one event (or one piece of a plain body). Consecutive events are
    /// separated by the configured `chunk_delay`.
    Event(Bytes),
    /// Flush whatever is held back, then wait this long.
    Pause(Duration),
    /// Flush whatever is held back, then cut the connection: the body ends with an
    /// error, so the server aborts it without the terminating chunk.
    Cut,
}

/// How a progressive body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// Wait between two consecutive events.
    pub chunk_delay: Duration,
    /// Regroup the bytes awkwardly (see [`Fragmenter`]).
    pub fragment: bool,
}

/// Regroups a sequence of events into awkward writes, without changing the bytes.
///
/// With fragmentation on, event number `i` (counting from 0):
/// * when `i % 4` is 1 or 2, is held back and written together with the next event,
///   so one write carries several events;
/// * otherwise is written (after whatever was held back) in pieces cut two bytes in
///   (`da|ta:`), right after the lead byte of its first multi-byte UTF-8 character,
///   at its middle, and between its two closing newlines.
///
/// Concatenating every write gives back exactly the concatenated events. With
/// fragmentation off, each event is one write.
#[derive(Debug, Default)]
pub struct Fragmenter {
    enabled: bool,
    index: usize,
    held: BytesMut,
}

impl Fragmenter {
    /// A fragmenter that regroups when `enabled`, and passes events through otherwise.
    pub fn new(enabled: bool) -> Self {
        Fragmenter {
            enabled,
            index: 0,
            held: BytesMut::new(),
        }
    }

    /// The writes to make for the next event (possibly none, when it is held back).
    pub fn push(&mut self, event: Bytes) -> Vec<Bytes> {
        if !self.enabled {
            return vec![event];
        }
        let index = self.index;
        self.index += 1;
        if matches!(index % 4, 1 | 2) {
            self.held.extend_from_slice(&event);
            return Vec::new();
        }
        let offset = self.held.len();
        let mut buffer = std::mem::take(&mut self.held);
        buffer.extend_from_slice(&event);
        let len = event.len();
        let mut cuts: Vec<usize> = vec![2, len / 2, len.saturating_sub(1)];
        if let Some(at) = event.iter().position(|b| b & 0xC0 == 0x80) {
            cuts.push(at);
        }
        let mut cuts: Vec<usize> = cuts
            .into_iter()
            .map(|cut| cut + offset)
            .filter(|&cut| cut > 0 && cut < buffer.len())
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut buffer = buffer.freeze();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut taken = 0;
        for cut in cuts {
            pieces.push(buffer.split_to(cut - taken));
            taken = cut;
        }
        pieces.push(buffer);
        pieces
    }

    /// Whatever is held back, as one write (nothing when nothing is held).
    pub fn flush(&mut self) -> Vec<Bytes> {
        if self.held.is_empty() {
            Vec::new()
        } else {
            vec![std::mem::take(&mut self.held).freeze()]
        }
    }
}

/// Turns `steps` into a streamed body. `guard` learns whether the body reached its end,
/// was cut on purpose, or was dropped early because the client went away.
pub(crate) fn body(steps: Vec<Step>, options: WriteOptions, guard: BodyGuard) -> Body {
    let stream = io_stream(async_stream::try_stream! {
        let mut guard = guard;
        let mut fragmenter = Fragmenter::new(options.fragment);
        let mut steps = steps.into_iter().peekable();
        let mut wrote_event = false;
        while let Some(step) = steps.next() {
            match step {
                Step::Event(event) => {
                    if wrote_event && !options.chunk_delay.is_zero() {
                        tokio::time::sleep(options.chunk_delay).await;
                    }
                    wrote_event = true;
                    let last = steps.peek().is_none();
                    let mut pieces = fragmenter.push(event);
                    if last {
                        pieces.extend(fragmenter.flush());
                    }
                    let count = pieces.len();
                    for (i, piece) in pieces.into_iter().enumerate() {
                        if i > 0 {
                            // Let the server flush, so pieces leave as separate writes.
                            tokio::task::yield_now().await;
                        }
                        if last && i + 1 == count {
                            guard.finish();
                        }
                        yield piece;
                    }
                }
                Step::Pause(duration) => {
                    for piece in fragmenter.flush() {
                        yield piece;
                    }
                    tokio::time::sleep(duration).await;
                }
                Step::Cut => {
                    for piece in fragmenter.flush() {
                        yield piece;
                    }
                    tokio::time::sleep(CUT_FLUSH_PAUSE).await;
                    guard.cut();
                    Err::<(), io::Error>(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "mock provider cut the connection",
                    ))?;
                }
            }
        }
        for piece in fragmenter.flush() {
            yield piece;
        }
        guard.finish();
    });
    Body::from_stream(stream)
}

/// Fixes the error type of a body stream.
fn io_stream<S>(stream: S) -> S
where
    S: futures::Stream<Item = Result<Bytes, io::Error>>,
{
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Bytes> {
        (0..9)
            .map(|i| data(format!("{{\"n\":{i},\"text\":\"héllo ✓\"}}").as_bytes()))
            .collect()
    }

    #[test]
    fn fragments_rejoin_to_the_same_bytes() {
        let mut fragmenter = Fragmenter::new(true);
        let mut writes = Vec::new();
        for event in events() {
            writes.extend(fragmenter.push(event));
        }
        writes.extend(fragmenter.flush());
        let joined: Vec<u8> = writes.iter().flat_map(|w| w.iter().copied()).collect();
        let expected: Vec<u8> = events().iter().flat_map(|e| e.iter().copied()).collect();
        assert_eq!(joined, expected);
        // Some write ends inside a multi-byte character.
        assert!(writes.iter().any(|w| std::str::from_utf8(w).is_err()));
        // Some write carries more than one complete event.
        assert!(writes
            .iter()
            .any(|w| w.windows(2).filter(|p| p == b"\n\n").count() >= 2));
        // Some write stops inside the `data:` prefix.
        assert!(writes.iter().any(|w| w.ends_with(b"da")));
    }

    #[test]
    fn disabled_fragmenter_passes_events_through() {
        let mut fragmenter = Fragmenter::new(false);
        for event in events() {
            assert_eq!(fragmenter.push(event.clone()), vec![event]);
        }
        assert!(fragmenter.flush().is_empty());
    }

    #[test]
    fn named_events_are_framed() {
        assert_eq!(
            &named_event("ping", b"{}")[..],
            b"event: ping\ndata: {}\n\n".as_slice()
        );
        assert_eq!(&data_crlf(b"{}")[..], b"data: {}\r\n\r\n".as_slice());
    }
}
