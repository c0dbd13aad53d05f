//! A stored answer: the provider's answer as it sent it (its events when streamed, its
//! body when not), what is needed to translate it again (the entry's kind, the model
//! served, status and content type), its identity (replaced on every hit) and its usage
//! and cost (what a hit saves). Written to Redis as one compressed value.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use perpetuo_wire::replay::Identity;
use perpetuo_wire::{ProviderKind, Usage};

/// One stored answer.
#[derive(Debug, Clone)]
pub struct Stored {
    pub head: Head,
    /// The provider's events (streamed) or its body, in the pieces it sent them.
    pub pieces: Vec<Bytes>,
}

/// Everything about a stored answer but its pieces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    pub kind: ProviderKind,
    pub served: String,
    pub status: u16,
    pub content_type: String,
    pub streamed: bool,
    pub id: Option<String>,
    pub created: Option<i64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    /// What the provider charged, when the model is priced.
    pub cost_nusd: Option<i64>,
    /// When it was stored (Unix ms) and for how long it may be served (s).
    pub stored_at_ms: i64,
    pub ttl_s: u32,
}

impl Head {
    pub fn identity(&self) -> Identity {
        Identity {
            id: self.id.clone(),
            created: self.created,
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
        }
    }
}

impl Stored {
    /// Bytes it holds (its weight in the in-process cache).
    pub fn weight(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum::<usize>() + 256
    }

    /// Seconds since it was stored, at `now_ms`.
    pub fn age_s(&self, now_ms: i64) -> u64 {
        u64::try_from(now_ms.saturating_sub(self.head.stored_at_ms) / 1000).unwrap_or(0)
    }

    /// Whether it may still be served at `now_ms`.
    pub fn fresh(&self, now_ms: i64) -> bool {
        self.age_s(now_ms) < u64::from(self.head.ttl_s)
    }

    /// The value kept in Redis: a version byte, then zstd of the head (JSON) and the
    /// pieces, each with its length.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let head = serde_json::to_vec(&self.head).ok()?;
        let mut raw = BytesMut::with_capacity(self.weight() + head.len());
        raw.put_u32(u32::try_from(head.len()).ok()?);
        raw.put_slice(&head);
        raw.put_u32(u32::try_from(self.pieces.len()).ok()?);
        for p in &self.pieces {
            raw.put_u32(u32::try_from(p.len()).ok()?);
            raw.put_slice(p);
        }
        let mut out = vec![VERSION];
        out.extend(zstd::bulk::compress(&raw, 1).ok()?);
        Some(out)
    }

    /// The answer from a Redis value; `None` for anything this version did not write or
    /// that would decompress past `max_bytes`.
    pub fn decode(value: &[u8], max_bytes: usize) -> Option<Stored> {
        let (&version, compressed) = value.split_first()?;
        if version != VERSION {
            return None;
        }
        let raw = zstd::bulk::decompress(compressed, max_bytes.saturating_add(64 * 1024)).ok()?;
        let mut raw = Bytes::from(raw);
        let take = |raw: &mut Bytes| -> Option<Bytes> {
            if raw.remaining() < 4 {
                return None;
            }
            let n = raw.get_u32() as usize;
            (raw.remaining() >= n).then(|| raw.split_to(n))
        };
        let head: Head = serde_json::from_slice(&take(&mut raw)?).ok()?;
        if raw.remaining() < 4 {
            return None;
        }
        let count = raw.get_u32() as usize;
        let mut pieces = Vec::with_capacity(count.min(raw.remaining() / 4 + 1));
        for _ in 0..count {
            pieces.push(take(&mut raw)?);
        }
        Some(Stored { head, pieces })
    }
}

const VERSION: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            head: Head {
                kind: ProviderKind::Anthropic,
                served: "claude".into(),
                status: 200,
                content_type: "text/event-stream".into(),
                streamed: true,
                id: Some("msg_1".into()),
                created: None,
                prompt_tokens: 3,
                completion_tokens: 4,
                cached_tokens: 0,
                cache_write_tokens: 0,
                cost_nusd: Some(12),
                stored_at_ms: 1_000,
                ttl_s: 60,
            },
            pieces: vec![
                Bytes::from_static(b"event: a\n\n"),
                Bytes::from_static(b"b"),
            ],
        }
    }

    #[test]
    fn an_answer_round_trips_through_its_stored_form() {
        let s = stored();
        let back = Stored::decode(&s.encode().unwrap(), 1 << 20).unwrap();
        assert_eq!(back.pieces, s.pieces);
        assert_eq!(back.head.served, "claude");
        assert_eq!(back.head.kind, ProviderKind::Anthropic);
        assert!(back.fresh(59_000));
        assert!(!back.fresh(61_000));
    }

    #[test]
    fn a_value_it_did_not_write_is_no_answer() {
        assert!(Stored::decode(b"", 1 << 20).is_none());
        assert!(Stored::decode(b"\x02abc", 1 << 20).is_none());
        let mut v = stored().encode().unwrap();
        v.truncate(v.len() / 2);
        assert!(Stored::decode(&v, 1 << 20).is_none());
        // Past the size it may decompress to.
        let big = Stored {
            pieces: vec![Bytes::from(vec![b'x'; 200_000])],
            ..stored()
        };
        assert!(Stored::decode(&big.encode().unwrap(), 1_000).is_none());
    }
}
