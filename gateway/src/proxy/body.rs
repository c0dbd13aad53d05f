//! The request body: read whole and bounded, then checked and scanned.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::errors::GatewayError;
use crate::lazy_json::LazyJson;
use crate::validate::{self, BadModel};

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

/// Reads and discards the rest of a request body, up to `cap` bytes in all.
async fn drain(session: &mut Session, mut seen: usize, cap: usize) {
    while seen <= cap {
        match session.read_request_body().await {
            Ok(Some(chunk)) => seen += chunk.len(),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes. An oversized body is still read
/// (and discarded) up to twice the limit, so that clients which send their whole body
/// before reading the answer get the 413 rather than a reset connection.
pub async fn read(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let drain_cap = limit.saturating_mul(2);
    let declared = session
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        if n <= drain_cap {
            drain(session, 0, drain_cap).await;
        }
        return Err(GatewayError::too_large(limit));
    }
    let mut buf = Chunks::default();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    drain(session, buf.len() + chunk.len(), drain_cap).await;
                    return Err(GatewayError::too_large(limit));
                }
                buf.push(chunk);
            }
            Ok(None) => return Ok(buf.into_bytes()),
            Err(_) => {
                return Err(GatewayError::bad_request(
                    "invalid_body",
                    "The request body could not be read.",
                ))
            }
        }
    }
}

/// A JSON request: its body (read lazily as a tree) and its model name.
pub struct JsonRequest {
    pub body: LazyJson,
    pub model: String,
}

/// Reads, checks and scans a JSON request body with its model name.
pub async fn read_json(session: &mut Session, limit: usize) -> Result<JsonRequest, GatewayError> {
    let raw = read(session, limit).await?;
    if validate::nests_deeper_than(&raw, validate::MAX_JSON_DEPTH) {
        return Err(GatewayError::bad_request(
            "json_too_deep",
            format!(
                "The request body nests deeper than {} levels.",
                validate::MAX_JSON_DEPTH
            ),
        ));
    }
    let body = LazyJson::read(raw).ok_or_else(|| {
        GatewayError::bad_request("invalid_json", "The request body is not valid JSON.")
    })?;
    let model = match validate::model_name(body.model().unwrap_or("")) {
        Ok(m) => m.to_string(),
        Err(BadModel::Empty) => {
            return Err(GatewayError::bad_request(
                "missing_model",
                BadModel::Empty.message(),
            ))
        }
        Err(bad) => return Err(GatewayError::bad_request("invalid_model", bad.message())),
    };
    Ok(JsonRequest { body, model })
}
