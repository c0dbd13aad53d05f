//! Incremental server-sent-events framer: bytes in, complete events out, safe across any
//! chunk boundary (inside an event, a line ending or a UTF-8 character). Memory is bounded:
//! an event longer than the framer's limit (an upstream that never sends a blank line) is
//! an error, and the bytes held for it are released.

use bytes::{Bytes, BytesMut};

/// One complete event: its raw bytes (terminator included) and its joined `data` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub raw: Bytes,
    pub event: Option<String>,
    pub data: Option<String>,
}

#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    /// Bytes already scanned without finding a terminator.
    scanned: usize,
    limit: usize,
}

/// Default longest event the framer holds before giving up on framing.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// An event grew past the framer's limit without its terminating blank line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stream event is longer than {0} bytes")]
pub struct EventTooLarge(pub usize);

impl Default for Framer {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer that refuses events longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            limit: limit.max(1),
        }
    }

    /// Adds bytes and returns every event they complete; `Err` once the event being
    /// gathered is longer than the limit (the framer is then empty and should be dropped).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.find_terminator() {
            let raw = self.buf.split_to(end).freeze();
            self.scanned = 0;
            out.push(parse(raw));
        }
        if self.buf.len() > self.limit {
            self.buf = BytesMut::new();
            self.scanned = 0;
            return Err(EventTooLarge(self.limit));
        }
        Ok(out)
    }

    /// Whatever is left when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Option<Event> {
        self.scanned = 0;
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        Some(parse(self.buf.split().freeze()))
    }

    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// End index (exclusive) of the first event: after "\n\n", "\r\n\r\n" or "\r\r".
    fn find_terminator(&mut self) -> Option<usize> {
        let b = &self.buf;
        let start = self.scanned.saturating_sub(3);
        let mut i = start;
        while i < b.len() {
            if b[i] == b'\n' && i + 1 < b.len() && b[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if b[i] == b'\r' && i + 1 < b.len() {
                if b[i + 1] == b'\r' {
                    return Some(i + 2);
                }
                if b[i + 1] == b'\n' && i + 3 < b.len() && b[i + 2] == b'\r' && b[i + 3] == b'\n' {
                    return Some(i + 4);
                }
            }
            i += 1;
        }
        self.scanned = b.len();
        None
    }
}

/// Parses one complete event (its raw bytes, blank line included).
pub fn parse(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw);
    let mut data: Option<String> = None;
    let mut event = None;
    for line in text.split(['\n', '\r']) {
        if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_string()),
            }
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    Event { raw, event, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str =
        "data: {\"a\":\"héllo\"}\n\n: comment\n\nevent: ping\ndata: x\ndata: y\n\ndata: [DONE]\n\n";

    fn collect(chunks: &[&[u8]]) -> Vec<Event> {
        let mut f = Framer::new();
        let mut out: Vec<Event> = chunks.iter().flat_map(|c| f.push(c).unwrap()).collect();
        out.extend(f.finish());
        out
    }

    #[test]
    fn frames_events() {
        let ev = collect(&[STREAM.as_bytes()]);
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].data.as_deref(), Some("{\"a\":\"héllo\"}"));
        assert_eq!(ev[1].data, None);
        assert_eq!(ev[2].event.as_deref(), Some("ping"));
        assert_eq!(ev[2].data.as_deref(), Some("x\ny"));
        assert_eq!(ev[3].data.as_deref(), Some("[DONE]"));
        let joined: Vec<u8> = ev.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, STREAM.as_bytes());
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let whole = collect(&[STREAM.as_bytes()]);
        let b = STREAM.as_bytes();
        for i in 0..b.len() {
            for j in i..b.len() {
                assert_eq!(
                    collect(&[&b[..i], &b[i..j], &b[j..]]),
                    whole,
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn crlf_and_arbitrary_bytes() {
        let ev = collect(&[b"data: a\r\n\r\ndata: b\r\r"]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].data.as_deref(), Some("b"));
        let mut seed: u32 = 7;
        let mut f = Framer::new();
        for _ in 0..2000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (seed % 17) as usize;
            let bytes: Vec<u8> = (0..n).map(|k| (seed >> (k % 24)) as u8).collect();
            let _ = f.push(&bytes);
        }
        let _ = f.finish();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Whatever the bytes and however they are cut, the framer loses nothing (events
        /// and what is pending add up to the input) and never holds more than its limit.
        #[test]
        fn lossless_and_bounded(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::prop_oneof![
                    proptest::prelude::Just(b'\n'), proptest::prelude::Just(b'\r'), proptest::prelude::any::<u8>()
                ], 0..200),
                0..20),
            limit in 16usize..512,
        ) {
            let mut f = Framer::with_limit(limit);
            let mut seen: Vec<u8> = Vec::new();
            let mut input: Vec<u8> = Vec::new();
            for c in &chunks {
                input.extend_from_slice(c);
                match f.push(c) {
                    Ok(events) => {
                        events.iter().for_each(|e| seen.extend_from_slice(&e.raw));
                        proptest::prop_assert!(f.pending() <= limit);
                    }
                    Err(EventTooLarge(l)) => {
                        proptest::prop_assert_eq!(l, limit);
                        proptest::prop_assert_eq!(f.pending(), 0);
                        return Ok(());
                    }
                }
            }
            if let Some(rest) = f.finish() {
                seen.extend_from_slice(&rest.raw);
            }
            let trailing_blank = input.len() - seen.len();
            proptest::prop_assert!(input.starts_with(&seen));
            proptest::prop_assert!(input[seen.len()..].iter().all(|b| b.is_ascii_whitespace()), "{} bytes lost", trailing_blank);
        }
    }

    #[test]
    fn an_event_without_end_is_refused_past_the_limit() {
        let mut f = Framer::with_limit(64);
        assert_eq!(f.push(b"data: ok\n\n").unwrap().len(), 1);
        for _ in 0..3 {
            assert_eq!(f.push(&[b'x'; 16]).unwrap(), vec![]);
        }
        assert_eq!(f.push(&[b'x'; 32]), Err(EventTooLarge(64)));
        assert_eq!(f.pending(), 0, "the held bytes are released");
        // Many complete events in one chunk are fine, whatever their total size.
        let many = "data: 0123456789\n\n".repeat(100);
        assert_eq!(
            Framer::with_limit(64).push(many.as_bytes()).unwrap().len(),
            100
        );
    }
}
