//! The live answer as it is delivered, kept for the cache: a stream's events (framed
//! again here, so each stored piece is one whole event, as the provider split them) or a
//! body's chunks, bounded in size; and shared with the requests that follow it.

use bytes::Bytes;
use perpetuo_wire::sse::Framer;
use perpetuo_wire::translation::MAX_KEPT_BODY;

use super::flights::{Answering, Leading};

/// What is kept of one answer.
pub struct Recorder {
    /// Set for a stream: its events are framed as they come.
    framer: Option<Framer>,
    pieces: Vec<Bytes>,
    bytes: usize,
    /// Largest answer stored, bytes; past it nothing more is kept for the store.
    max_bytes: usize,
    too_large: bool,
    /// The flight this request leads, when others wait for it.
    leading: Option<Leading>,
    /// The answer is a success that followers can be given.
    shared: bool,
}

impl Recorder {
    pub fn new(streamed: bool, max_event_bytes: usize, max_bytes: usize) -> Self {
        Self {
            framer: streamed.then(|| Framer::with_limit(max_event_bytes)),
            pieces: Vec::new(),
            bytes: 0,
            max_bytes,
            too_large: false,
            leading: None,
            shared: false,
        }
    }

    pub fn leading(mut self, leading: Option<Leading>) -> Self {
        self.leading = leading;
        self
    }

    /// The answer begins: only a success is stored and shared.
    pub fn begin(&mut self, answering: Answering) -> bool {
        let ok = (200..300).contains(&answering.status);
        if ok {
            if let Some(l) = &self.leading {
                l.answering(answering);
                self.shared = true;
            }
        } else {
            // Followers go on their own; nothing is stored.
            self.leading = None;
            self.too_large = true;
        }
        ok
    }

    /// One chunk of the provider's answer, as read.
    pub fn push(&mut self, chunk: &Bytes) {
        if self.too_large && self.leading.is_none() {
            return;
        }
        let events = match &mut self.framer {
            Some(framer) => match framer.push(chunk) {
                Ok(events) => events.into_iter().map(|e| e.raw).collect(),
                Err(_) => {
                    self.give_up();
                    return;
                }
            },
            None => vec![chunk.clone()],
        };
        for piece in events {
            self.bytes += piece.len();
            if self.bytes > self.max_bytes {
                self.too_large = true;
                // Past what is stored, an answer is kept only for requests that follow it,
                // and only so far: nobody's answer holds more than the store would for
                // long, and followers of a larger one end as broken.
                let followed = self.leading.as_ref().is_some_and(Leading::followed);
                if !followed || self.bytes > MAX_KEPT_BODY.max(self.max_bytes) {
                    self.give_up();
                    return;
                }
            }
            // A stream's followers get each event as it comes; a body's, the whole.
            if let (Some(l), true) = (&self.leading, self.framer.is_some()) {
                l.piece(piece.clone());
            }
            self.pieces.push(piece);
        }
    }

    fn give_up(&mut self) {
        self.too_large = true;
        self.leading = None;
        self.pieces = Vec::new();
    }

    /// The answer ended properly: its pieces for the store (`None` when too large), and
    /// followers are given the end (a body, whole).
    pub fn finish(mut self) -> Option<Vec<Bytes>> {
        if let Some(framer) = &mut self.framer {
            if let Some(rest) = framer.finish() {
                self.bytes += rest.raw.len();
                if let Some(l) = &self.leading {
                    l.piece(rest.raw.clone());
                }
                self.pieces.push(rest.raw);
            }
        } else if self.pieces.len() > 1 {
            // A body is stored as one piece: its identity is rewritten in one place.
            self.pieces = vec![Bytes::from(self.pieces.concat())];
        }
        if let Some(l) = self.leading.take() {
            if self.framer.is_none() {
                if let Some(body) = self.pieces.first() {
                    l.piece(body.clone());
                }
            }
            if self.shared {
                l.done();
            }
        }
        (!self.too_large && self.bytes <= self.max_bytes).then_some(self.pieces)
    }
}
