//! The request body: read whole, bounded in size and in time, then checked and scanned.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use tokio::time::Instant;

use crate::errors::{ErrorKind, GatewayError};
use crate::validate::{self, BadModel};
use perpetuo_wire::lazy_json::{LazyJson, Numbers};

/// A body gathered from chunks without copying them; joined only when there are several.
#[derive(Default)]
pub struct Chunks {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    pub fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.parts.push(chunk);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.swap_remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                self.parts.iter().for_each(|p| joined.extend_from_slice(p));
                joined.freeze()
            }
        }
    }
}

/// How much of a body, and for how long, a request may send.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Time allowed for the whole body, from its first read.
    pub timeout: Duration,
}

/// Longest the rest of a refused body is read (and discarded) after the refusal, so that
/// a client sending its body before reading gets the answer rather than a reset.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// Reads and discards the rest of a request body, up to `cap` bytes in all and until
/// `until` at the latest.
async fn drain(session: &mut Session, mut seen: usize, cap: usize, until: Instant) {
    while seen <= cap {
        match tokio::time::timeout_at(until, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => seen += chunk.len(),
            _ => return,
        }
    }
}

/// Reads the whole body within `limits`: more than `max_bytes` is refused (413) and a
/// body not complete within `timeout` is refused (408); either way the connection is
/// closed after the answer. An oversized body is still read (and discarded) up to twice
/// the limit for at most [`DRAIN_DEADLINE`], so that clients which send their whole body
/// before reading the answer get the 413 rather than a reset connection.
pub async fn read(session: &mut Session, limits: BodyLimits) -> Result<Bytes, GatewayError> {
    let limit = limits.max_bytes;
    let until = Instant::now() + limits.timeout;
    let refused = |session: &mut Session, e: GatewayError| {
        // What is left of the body is not read: the connection cannot carry another
        // request.
        session.set_keepalive(None);
        e
    };
    let drain_until = || (Instant::now() + DRAIN_DEADLINE).min(until);
    let drain_cap = limit.saturating_mul(2);
    let declared = session
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        if n <= drain_cap {
            drain(session, 0, drain_cap, drain_until()).await;
        }
        return Err(refused(session, GatewayError::too_large(limit)));
    }
    let mut buf = Chunks::default();
    loop {
        let chunk = match tokio::time::timeout_at(until, session.read_request_body()).await {
            Ok(chunk) => chunk,
            Err(_) => return Err(refused(session, GatewayError::body_timeout(limits.timeout))),
        };
        match chunk {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    drain(session, buf.len() + chunk.len(), drain_cap, drain_until()).await;
                    return Err(refused(session, GatewayError::too_large(limit)));
                }
                buf.push(chunk);
            }
            Ok(None) => return Ok(buf.into_bytes()),
            Err(_) => {
                return Err(refused(
                    session,
                    GatewayError::bad_request(
                        ErrorKind::InvalidBody,
                        "The request body could not be read.",
                    ),
                ))
            }
        }
    }
}

/// A JSON request: its body (read lazily as a tree), its model name and its numbers.
pub struct JsonRequest {
    pub body: LazyJson,
    pub model: String,
    pub numbers: Numbers,
}

/// Reads, checks and scans a JSON request body with its model name.
pub async fn read_json(
    session: &mut Session,
    limits: BodyLimits,
) -> Result<JsonRequest, GatewayError> {
    let raw = read(session, limits).await?;
    if validate::nests_deeper_than(&raw, validate::MAX_JSON_DEPTH) {
        return Err(GatewayError::bad_request(
            ErrorKind::JsonTooDeep,
            format!(
                "The request body nests deeper than {} levels.",
                validate::MAX_JSON_DEPTH
            ),
        ));
    }
    let body = LazyJson::read(raw).ok_or_else(|| {
        GatewayError::bad_request(
            ErrorKind::InvalidJson,
            "The request body is not valid JSON.",
        )
    })?;
    if let Some(field) = body.repeated_field() {
        return Err(GatewayError::bad_request(
            ErrorKind::DuplicateField,
            format!("The request body names `{field}` more than once."),
        ));
    }
    let numbers = body
        .numbers()
        .map_err(|bad| GatewayError::bad_request(ErrorKind::InvalidNumber, bad.message))?;
    let model = match validate::model_name(body.model().unwrap_or("")) {
        Ok(m) => m.to_string(),
        Err(BadModel::Empty) => {
            return Err(GatewayError::bad_request(
                ErrorKind::MissingModel,
                BadModel::Empty.message(),
            ))
        }
        Err(bad) => {
            return Err(GatewayError::bad_request(
                ErrorKind::InvalidModel,
                bad.message(),
            ))
        }
    };
    Ok(JsonRequest {
        body,
        model,
        numbers,
    })
}
