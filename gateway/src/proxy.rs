//! The `ProxyHttp` implementation. `request_filter` owns the exchange: route, authenticate
//! from the cache, read the body (bounded), order candidates, run attempts with fallback,
//! and stream the chosen answer to the client. `logging` turns the outcome into exactly
//! one log record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use perpetuo_core::db::logs::{Attempt, LogRecord, UsageSource};
use perpetuo_core::pricing::Pricing;
use perpetuo_core::provider::ProviderKind;
use pingora::http::ResponseHeader;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::{AuthError, AuthedKey, KeyCache};
use crate::errors::GatewayError;
use crate::frontdoor::{self, anthropic_messages as messages, openai_responses as responses, Door};
use crate::limits::{self, Limiter};
use crate::log_writer::LogSink;
use crate::metrics;
use crate::providers::{self, tokens, Adapter, Call, Generated, StreamState, Usage};
use crate::routing::{order, split_pinned, Breakers, Entry, EntryCache, Failure, Turns};
use crate::sse::{Event, Framer};
use crate::upstream::{Outcome, Ready, Upstreams};
use crate::validate::{self, BadModel};

/// Largest response body kept aside to read its usage.
const MAX_USAGE_BODY: usize = 8 * 1024 * 1024;

pub struct Gateway {
    pub keys: Arc<KeyCache>,
    pub entries: Arc<EntryCache>,
    pub breakers: Breakers,
    pub turns: Turns,
    pub upstreams: Upstreams,
    pub pricing: Arc<Pricing>,
    pub sink: LogSink,
    pub max_body_bytes: usize,
    /// Where the Responses API keeps stored responses.
    pub responses: ResponseStore,
    pub limiter: Arc<Limiter>,
}

/// Stored responses (`store`, the Responses API's default), kept for `retention`.
pub struct ResponseStore {
    pub pool: perpetuo_core::db::Pool,
    pub retention: Duration,
}

/// What storing one Responses answer needs besides the answer.
#[derive(Debug, Clone)]
struct ToStore {
    input_items: Value,
    /// The conversation before the answer, as chat messages.
    conversation: Vec<Value>,
}

/// The Responses door's encoder and what to store when the answer is complete.
struct ResponsesOut {
    encoder: responses::StreamEncoder,
    echo: responses::Echo,
    store: Option<ToStore>,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    started_at: OffsetDateTime,
    request_id: Uuid,
    door: Option<Door>,
    key: Option<Arc<AuthedKey>>,
    model_requested: Option<String>,
    model_served: Option<String>,
    served_by: Option<Arc<Entry>>,
    attempts: Vec<Attempt>,
    status: u16,
    error_kind: Option<&'static str>,
    streamed: bool,
    usage: Option<Usage>,
    request: Option<Arc<Value>>,
    content: Generated,
    ttfb: Option<Duration>,
    /// Set once the request's record has been handed to the log writer.
    logged: bool,
    /// The front door whose shape errors are written in.
    error_shape: Door,
    /// What the gateway changed in the request, for the log row.
    note: Option<&'static str>,
    sink: LogSink,
    pricing: Arc<Pricing>,
    /// The key's limits: the permit held while the request runs, or the refusal.
    limits: limits::Gate,
}

/// How a request ended early.
enum Stop {
    /// Answer with this error (nothing sent yet).
    Respond(GatewayError),
    /// The client went away.
    ClientGone,
    /// A committed non-stream answer broke: close without completing the body.
    Abort(Box<Error>),
}

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Self {
        Stop::Respond(e)
    }
}

/// A body gathered from chunks without copying them; joined only when there are several.
#[derive(Default)]
struct Chunks {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.parts.push(chunk);
    }

    fn len(&self) -> usize {
        self.len
    }

    fn into_bytes(mut self) -> Bytes {
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

/// What the client asked for, as every attempt needs it.
struct Inbound<'a> {
    door: Door,
    call: Call<'a>,
    /// The Messages door's request in the OpenAI chat shape (and its bytes), for
    /// providers that do not speak the Messages API.
    pivot: Option<&'a Result<(Value, Bytes), providers::Unsupported>>,
    anthropic_version: Option<String>,
    anthropic_beta: Option<String>,
    /// The Responses door: the new response's id, and what to store.
    response_id: Option<String>,
    /// The Messages door's conversion dropped thinking blocks.
    thinking_dropped: bool,
    to_store: Option<ToStore>,
}

/// How a provider's answer reaches the client.
enum Encoding {
    /// In OpenAI's format, as the adapter gives it.
    OpenAi,
    /// Unchanged: the provider speaks the client's format (the adapter still reads it,
    /// for usage and for whether the stream ended properly).
    Passthrough,
    /// The adapter's OpenAI format encoded as Anthropic's Messages events.
    Messages(Box<messages::StreamEncoder>),
    /// The adapter's OpenAI format encoded as the Responses API's events.
    Responses(Box<ResponsesOut>),
    /// OpenAI's own Responses API, passed through; read for usage and for storing.
    ResponsesPassthrough(Box<PassedResponse>),
}

/// A Responses answer passed through from OpenAI.
struct PassedResponse {
    store: Option<ToStore>,
    /// The final Response object, once `response.completed` (or `.incomplete`) passed.
    last: Option<Value>,
    /// The last `sequence_number` seen, to number an error event after it.
    sequence: u64,
}

impl Encoding {
    /// Whether a non-stream answer must be read whole to be rewritten.
    fn rewrites_whole_body(&self, adapter: Adapter) -> bool {
        match self {
            Encoding::OpenAi => adapter.translates(),
            Encoding::Passthrough => false,
            Encoding::Messages(_) | Encoding::Responses(_) | Encoding::ResponsesPassthrough(_) => {
                true
            }
        }
    }

    /// How the provider's stream is read during the hold before the first token.
    fn classifier(&self, adapter: Adapter) -> crate::upstream::Classify {
        match self {
            Encoding::ResponsesPassthrough(_) => responses::upstream_signal,
            _ => adapter.classifier(),
        }
    }

    /// Decodes one provider event and appends what the client receives to `out`.
    fn event(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        match self {
            Encoding::OpenAi => {
                for piece in adapter.decode_event(state, event) {
                    out.extend_from_slice(&piece);
                }
            }
            Encoding::Passthrough => {
                let _ = adapter.decode_event(state, event);
                out.extend_from_slice(&event.raw);
            }
            Encoding::Messages(encoder) => {
                for piece in adapter.decode_event(state, event) {
                    for e in encoder.push(&crate::sse::parse(piece)) {
                        out.extend_from_slice(&e);
                    }
                }
            }
            Encoding::Responses(r) => {
                for piece in adapter.decode_event(state, event) {
                    for e in r.encoder.push(&crate::sse::parse(piece)) {
                        out.extend_from_slice(&e);
                    }
                }
            }
            Encoding::ResponsesPassthrough(p) => {
                out.extend_from_slice(&event.raw);
                let Some(v) = event
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                else {
                    return;
                };
                if let Some(n) = v["sequence_number"].as_u64() {
                    p.sequence = n;
                }
                match v["type"].as_str().unwrap_or("") {
                    "response.completed" | "response.incomplete" => {
                        state.usage = responses::usage_of(&v["response"]);
                        state.finished = true;
                        p.last = Some(v["response"].clone());
                    }
                    "response.failed" | "error" => state.errored = true,
                    "response.output_text.delta" => {
                        if let Some(d) = v["delta"].as_str() {
                            state.content.push(d);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The provider's stream ended; `Err` when it ended without its format's end.
    fn finish(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
    ) -> Result<Vec<Bytes>, providers::BrokenStream> {
        let tail = adapter.finish_stream(state)?;
        match self {
            Encoding::OpenAi => Ok(tail),
            Encoding::Passthrough => Ok(Vec::new()),
            Encoding::Messages(encoder) => {
                let mut out: Vec<Bytes> = tail
                    .into_iter()
                    .flat_map(|piece| encoder.push(&crate::sse::parse(piece)))
                    .collect();
                out.extend(encoder.finish());
                if encoder.complete() {
                    Ok(out)
                } else {
                    Err(providers::BrokenStream)
                }
            }
            Encoding::ResponsesPassthrough(_) if state.finished && !state.errored => Ok(Vec::new()),
            Encoding::ResponsesPassthrough(_) => Err(providers::BrokenStream),
            // The Responses stream is closed by the caller, which stores the answer first.
            Encoding::Responses(r) => {
                let out: Vec<Bytes> = tail
                    .into_iter()
                    .flat_map(|piece| r.encoder.push(&crate::sse::parse(piece)))
                    .collect();
                if r.encoder.finished() {
                    Ok(out)
                } else {
                    Err(providers::BrokenStream)
                }
            }
        }
    }

    /// The event that ends a broken stream, unless the provider's own error event was
    /// already passed on.
    fn broken(&mut self, state: &StreamState, message: &str, kind: &str) -> Option<Bytes> {
        match self {
            Encoding::Responses(r) if !r.encoder.errored => {
                Some(Bytes::from(r.encoder.failed(message).concat()))
            }
            Encoding::ResponsesPassthrough(p) if !state.errored => {
                let event = json!({"type": "error", "code": kind, "message": message,
                                   "param": null, "sequence_number": p.sequence + 1});
                Some(Bytes::from(format!("event: error\ndata: {event}\n\n")))
            }
            Encoding::OpenAi if !state.errored => {
                Some(providers::chunk::error_event(message, "server_error", kind))
            }
            Encoding::Passthrough if !state.errored => Some(messages::error_event(502, message)),
            Encoding::Messages(encoder) if !encoder.errored => {
                Some(messages::error_event(502, message))
            }
            _ => None,
        }
    }
}

/// The stream state of an answer passed through unchanged (read only for its usage).
fn passthrough_state(served: &str) -> StreamState {
    StreamState {
        meta: providers::chunk::Meta::new(served),
        ..Default::default()
    }
}

impl Inbound<'_> {
    /// The door's request in the OpenAI chat shape, built for one entry by its adapter.
    fn pivot_request(
        &self,
        adapter: Adapter,
        entry: &Entry,
        served: &str,
    ) -> Result<(crate::providers::UpstreamRequest, StreamState), providers::Unsupported> {
        let (chat, raw) = match self.pivot {
            Some(Ok((chat, raw))) => (chat, raw),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(providers::Unsupported("no request".into())),
        };
        let call = Call {
            request: chat,
            raw,
            ..self.call
        };
        adapter.build_request(
            &entry.upstream.path_prefix,
            entry.key.expose(),
            &call,
            served,
        )
    }

    /// The request for one entry, its stream state and how its answer is encoded.
    fn build(
        &self,
        adapter: Adapter,
        entry: &Entry,
        served: &str,
    ) -> Result<(crate::providers::UpstreamRequest, StreamState, Encoding), providers::Unsupported>
    {
        let prefix = &entry.upstream.path_prefix;
        let key = entry.key.expose();
        match (self.door, adapter) {
            (Door::Messages, Adapter::Anthropic) => {
                let req = providers::anthropic::passthrough_request(
                    prefix,
                    key,
                    &self.call,
                    served,
                    self.anthropic_version.as_deref(),
                    self.anthropic_beta.as_deref(),
                )?;
                let state = passthrough_state(served);
                Ok((req, state, Encoding::Passthrough))
            }
            (Door::Messages, _) => {
                let (req, state) = self.pivot_request(adapter, entry, served)?;
                let encoder = messages::StreamEncoder::new(served);
                Ok((req, state, Encoding::Messages(Box::new(encoder))))
            }
            (Door::Responses, Adapter::OpenAi)
                if entry.kind == ProviderKind::Openai
                    && self.call.request.get("previous_response_id").is_none() =>
            {
                let req = providers::openai::responses_request(prefix, key, &self.call, served)?;
                let state = passthrough_state(served);
                let passed = PassedResponse {
                    store: self.to_store.clone(),
                    last: None,
                    sequence: 0,
                };
                Ok((req, state, Encoding::ResponsesPassthrough(Box::new(passed))))
            }
            (Door::Responses, _) => {
                let (req, state) = self.pivot_request(adapter, entry, served)?;
                let id = self
                    .response_id
                    .clone()
                    .unwrap_or_else(responses::response_id);
                let echo = responses::Echo::new(id, self.call.request, served);
                let out = ResponsesOut {
                    encoder: responses::StreamEncoder::new(echo.clone()),
                    echo,
                    store: self.to_store.clone(),
                };
                Ok((req, state, Encoding::Responses(Box::new(out))))
            }
            _ => {
                let (req, state) = adapter.build_request(prefix, key, &self.call, served)?;
                Ok((req, state, Encoding::OpenAi))
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

impl Gateway {
    async fn write_json(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        status: u16,
        body: Vec<u8>,
    ) -> pingora::Result<()> {
        let mut h = ResponseHeader::build(status, Some(6))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", body.len().to_string())?;
        self.common_headers(&mut h, ctx)?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    }

    fn common_headers(&self, h: &mut ResponseHeader, ctx: &Ctx) -> pingora::Result<()> {
        h.insert_header("x-request-id", ctx.request_id.to_string())?;
        h.insert_header("x-perpetuo-attempts", ctx.attempts.len().to_string())?;
        let provider = ctx
            .served_by
            .as_ref()
            .map(|e| e.name.clone())
            .or_else(|| ctx.attempts.last().map(|a| a.provider_name.clone()));
        if let Some(p) = provider {
            h.insert_header("x-perpetuo-provider", p)?;
        }
        ctx.limits.write_headers(h)
    }

    async fn authenticate(
        &self,
        session: &Session,
        door: Option<Door>,
    ) -> Result<Arc<AuthedKey>, GatewayError> {
        let token = frontdoor::credentials(session, door).ok_or_else(GatewayError::missing_key)?;
        self.keys.authenticate(token).await.map_err(|e| match e {
            AuthError::Invalid => GatewayError::invalid_key(),
            AuthError::Unavailable => GatewayError::auth_unavailable(),
        })
    }

    /// Reads the whole body, refusing more than `max_body_bytes`. An oversized body is still
    /// read (and discarded) up to twice the limit, so that clients which send their whole
    /// body before reading the answer get the 413 rather than a reset connection.
    async fn read_body(&self, session: &mut Session) -> Result<Bytes, GatewayError> {
        let limit = self.max_body_bytes;
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

    async fn models(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Stop> {
        let key = self.authenticate(session, None).await?;
        let entries = self
            .entries
            .entries(key.workspace_id)
            .await
            .map_err(|_| GatewayError::auth_unavailable())?;
        // Models the entries name, and — for entries that serve any model — the pricing
        // table's models of their kind, marked as such (the provider may serve others).
        let mut seen = std::collections::BTreeMap::new();
        for e in entries.iter() {
            for m in e.models.iter().chain(e.model_map.keys()) {
                seen.insert(m.clone(), (e.kind.as_str(), false));
            }
        }
        for e in entries.iter().filter(|e| e.models.is_empty()) {
            for m in self.pricing.model_names() {
                if e.kind.names_model(m) {
                    seen.entry(m.to_string()).or_insert((e.kind.as_str(), true));
                }
            }
        }
        let data: Vec<Value> = seen
            .into_iter()
            .map(|(id, (owner, from_pricing))| {
                let mut model =
                    json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
                if from_pricing {
                    model["perpetuo_listed_from"] = json!("pricing_table");
                }
                model
            })
            .collect();
        let body = json!({"object": "list", "data": data})
            .to_string()
            .into_bytes();
        ctx.status = 200;
        self.write_json(session, ctx, 200, body)
            .await
            .map_err(Stop::Abort)
    }

    async fn handle(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Stop> {
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        let door = match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => {
                ctx.status = 200;
                let body = br#"{"status":"ok"}"#.to_vec();
                return self
                    .write_json(session, ctx, 200, body)
                    .await
                    .map_err(Stop::Abort);
            }
            ("GET", "/v1/models") => return self.models(session, ctx).await,
            ("POST", "/v1/messages/count_tokens") => return self.count_tokens(session, ctx).await,
            ("GET" | "DELETE", p) if p.starts_with("/v1/responses/") => {
                return self.stored_response(session, ctx, &method, &path).await
            }
            _ => match Door::for_route(&method, &path) {
                Some(door) => door,
                None => return Err(GatewayError::not_found(&path).into()),
            },
        };
        ctx.door = Some(door);
        ctx.error_shape = door;
        // A client that stops reading must not hold a stream forever.
        session.set_write_timeout(Some(self.upstreams.timeouts.idle));
        let key = self.authenticate(session, Some(door)).await?;
        ctx.key = Some(key.clone());
        let (body, request, model) = self.read_request(session).await?;
        ctx.model_requested = Some(model.clone());
        let stream = door.streams()
            && request
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        ctx.streamed = stream;
        // The Messages door speaks to non-Anthropic providers through the OpenAI chat
        // shape; its conversion is made once and refused per entry only where needed.
        let mut to_store = None;
        let mut thinking_dropped = false;
        let pivot = match door {
            Door::Messages => Some(messages::to_chat(&request).map(|(chat, dropped)| {
                thinking_dropped = dropped.thinking;
                chat
            })),
            Door::Responses => {
                let history = self.previous_conversation(&key, &request).await?;
                let chat = responses::to_chat(&request, &history);
                if request.get("store") != Some(&Value::Bool(false)) {
                    // A request only OpenAI can take (built-in tools) is still stored; its
                    // conversation then starts from what can be expressed as chat: nothing.
                    let conversation = match &chat {
                        Ok(chat) => chat["messages"].as_array().cloned().unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
                    to_store = Some(ToStore {
                        input_items: Value::Array(responses::input_items(&request)),
                        conversation,
                    });
                }
                Some(chat)
            }
            _ => None,
        }
        .map(|chat| {
            chat.and_then(|chat| {
                let raw =
                    serde_json::to_vec(&chat).map_err(|e| providers::Unsupported(e.to_string()))?;
                Ok((chat, Bytes::from(raw)))
            })
        });
        let request = Arc::new(request);
        ctx.request = Some(match &pivot {
            Some(Ok((chat, _))) => Arc::new(chat.clone()),
            _ => request.clone(),
        });

        let entries = self
            .entries
            .entries(key.workspace_id)
            .await
            .map_err(|_| GatewayError::auth_unavailable())?;
        let (pinned, bare_model) = split_pinned(&model);
        let candidates = order(
            &entries,
            bare_model,
            pinned,
            door.operation(),
            self.turns.next(),
        );
        if candidates.is_empty() {
            return Err(GatewayError::model_not_found(&model).into());
        }
        let header = |name: &str| {
            session
                .get_header(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let inbound = Inbound {
            door,
            call: Call {
                route: door.operation(),
                request: &request,
                raw: &body,
                model: bare_model,
                stream,
            },
            pivot: pivot.as_ref(),
            anthropic_version: header("anthropic-version"),
            anthropic_beta: header("anthropic-beta"),
            response_id: (door == Door::Responses).then(responses::response_id),
            thinking_dropped,
            to_store,
        };
        ctx.limits = self
            .limiter
            .admit(&key, bare_model, &request, body.len(), &self.pricing)
            .await;
        ctx.limits.check()?;
        self.run_attempts(session, ctx, &candidates, &inbound).await
    }

    /// The stored conversation a Responses request continues (`previous_response_id`),
    /// empty when it names none.
    async fn previous_conversation(
        &self,
        key: &AuthedKey,
        request: &Value,
    ) -> Result<Vec<Value>, GatewayError> {
        let Some(previous) = request.get("previous_response_id").and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        let pool = &self.responses.pool;
        let found = perpetuo_core::db::with_timeout(Duration::from_secs(5), async {
            let client = pool.get().await?;
            perpetuo_core::db::responses::find(&client, key.workspace_id, previous).await
        })
        .await
        .map_err(|_| GatewayError::auth_unavailable())?;
        match found {
            Some(stored) => match stored.conversation {
                Value::Array(messages) => Ok(messages),
                // Stored without its conversation: it outgrew the body limit.
                _ => Err(GatewayError::bad_request(
                    "conversation_too_long",
                    "The conversation of this response is too long to continue; start a new one.",
                )),
            },
            None => Err(GatewayError::response_not_found(previous)),
        }
    }

    /// Stores a finished Responses answer; a failure is logged, and the answer still goes
    /// out (only a later `previous_response_id` would miss it).
    async fn store_response(&self, ctx: &Ctx, store: &ToStore, response: &Value, message: Value) {
        let Some(key) = &ctx.key else { return };
        let Some(id) = response["id"].as_str() else {
            return;
        };
        let mut conversation = store.conversation.clone();
        conversation.push(message);
        // A chain of turns grows its conversation with every answer; past the body limit
        // it is not kept (and cannot be continued), so no tenant can grow one without end.
        let mut conversation = Value::Array(conversation);
        if serde_json::to_vec(&conversation).map_or(true, |b| b.len() > self.max_body_bytes) {
            conversation = Value::Null;
        }
        let expires_at = OffsetDateTime::now_utc() + self.responses.retention;
        let row = perpetuo_core::db::responses::NewStoredResponse {
            id,
            workspace_id: key.workspace_id,
            api_key_id: Some(key.id),
            expires_at,
            response,
            input_items: &store.input_items,
            conversation: &conversation,
        };
        let pool = &self.responses.pool;
        let stored = perpetuo_core::db::with_timeout(Duration::from_secs(5), async {
            let client = pool.get().await?;
            perpetuo_core::db::responses::insert(&client, &row).await
        })
        .await;
        if let Err(e) = stored {
            metrics::RESPONSES_NOT_STORED.inc();
            tracing::warn!(request = %ctx.request_id, error = %e, "response not stored");
        }
    }

    /// `GET|DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: a
    /// workspace's stored responses (another workspace's are not found).
    async fn stored_response(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        method: &str,
        path: &str,
    ) -> Result<(), Stop> {
        let key = self.authenticate(session, None).await?;
        let rest = path.trim_start_matches("/v1/responses/");
        let (id, items) = match rest.strip_suffix("/input_items") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        if id.is_empty() || id.contains('/') || (items && method != "GET") {
            return Err(GatewayError::not_found(path).into());
        }
        let pool = &self.responses.pool;
        let workspace = key.workspace_id;
        let body = perpetuo_core::db::with_timeout(Duration::from_secs(5), async {
            let client = pool.get().await?;
            if method == "DELETE" {
                let deleted = perpetuo_core::db::responses::delete(&client, workspace, id).await?;
                return Ok(deleted.then(|| json!({"id": id, "object": "response", "deleted": true})));
            }
            let found = perpetuo_core::db::responses::find(&client, workspace, id).await?;
            Ok(found.map(|r| {
                if !items {
                    return r.response;
                }
                let data = r.input_items.as_array().cloned().unwrap_or_default();
                json!({"object": "list", "first_id": data.first().map(|i| i["id"].clone()),
                       "last_id": data.last().map(|i| i["id"].clone()), "has_more": false, "data": data})
            }))
        })
        .await
        .map_err(|_| GatewayError::auth_unavailable())?;
        let Some(body) = body else {
            return Err(GatewayError::response_not_found(id).into());
        };
        ctx.status = 200;
        self.write_json(session, ctx, 200, body.to_string().into_bytes())
            .await
            .map_err(Stop::Abort)
    }

    /// Reads, checks and parses a JSON request body; returns it with its model name.
    async fn read_request(
        &self,
        session: &mut Session,
    ) -> Result<(Bytes, Value, String), GatewayError> {
        let body = self.read_body(session).await?;
        if validate::nests_deeper_than(&body, validate::MAX_JSON_DEPTH) {
            return Err(GatewayError::bad_request(
                "json_too_deep",
                format!(
                    "The request body nests deeper than {} levels.",
                    validate::MAX_JSON_DEPTH
                ),
            ));
        }
        let request: Value = serde_json::from_slice(&body).map_err(|_| {
            GatewayError::bad_request("invalid_json", "The request body is not valid JSON.")
        })?;
        let model = request.get("model").and_then(Value::as_str).unwrap_or("");
        let model = match validate::model_name(model) {
            Ok(m) => m.to_string(),
            Err(BadModel::Empty) => {
                return Err(GatewayError::bad_request(
                    "missing_model",
                    BadModel::Empty.message(),
                ))
            }
            Err(bad) => return Err(GatewayError::bad_request("invalid_model", bad.message())),
        };
        Ok((body, request, model))
    }

    /// `POST /v1/messages/count_tokens`: the prompt's tokens, counted here with the
    /// tokenizer (no provider is called and nothing is billed).
    async fn count_tokens(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Stop> {
        ctx.error_shape = Door::Messages;
        self.authenticate(session, Some(Door::Messages)).await?;
        let (_, request, _) = self.read_request(session).await?;
        let chat = messages::to_chat(&request)
            .map(|(chat, _)| chat)
            .unwrap_or(request);
        let mut n = tokens::prompt(&chat);
        if let Some(tools) = chat.get("tools") {
            n = n.saturating_add(tokens::count(&tools.to_string()));
        }
        let body = serde_json::json!({"input_tokens": n})
            .to_string()
            .into_bytes();
        ctx.status = 200;
        self.write_json(session, ctx, 200, body)
            .await
            .map_err(Stop::Abort)
    }

    async fn run_attempts(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        candidates: &[Arc<Entry>],
        inbound: &Inbound<'_>,
    ) -> Result<(), Stop> {
        let mut failures: Vec<Failure> = Vec::new();
        let mut refused: Option<String> = None;
        for entry in candidates {
            let adapter = Adapter::for_kind(entry.kind);
            let served = entry.served_model(inbound.call.model).to_string();
            let (req, state, encoding) = match inbound.build(adapter, entry, &served) {
                Ok(built) => built,
                Err(providers::Unsupported(reason)) => {
                    refused.get_or_insert(reason);
                    continue;
                }
            };
            let Some(admission) = self.breakers.allow(entry.id, Instant::now()) else {
                continue;
            };
            let started = Instant::now();
            let deadline = started + self.upstreams.timeouts.ttfb;
            // A client that leaves drops the attempt (and with it the upstream connection)
            // and the admission, which hands a half-open breaker's probe to the next request.
            let outcome = tokio::select! {
                o = self.upstreams.attempt(entry, encoding.classifier(adapter), &req, deadline) => o,
                _ = session.read_body_or_idle(true) => return Err(Stop::ClientGone),
            };
            let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
            match outcome {
                Outcome::Failed {
                    failure,
                    status,
                    retry_after,
                } => {
                    metrics::FALLBACKS
                        .with_label_values(&[failure.reason()])
                        .inc();
                    if !failure.counts_against_entry() {
                        drop(admission);
                    } else if admission.failure(Instant::now(), retry_after) {
                        metrics::BREAKER_OPENED
                            .with_label_values(&[entry.kind.as_str()])
                            .inc();
                    }
                    ctx.attempts.push(Attempt {
                        provider_id: entry.id,
                        provider_name: entry.name.clone(),
                        status,
                        latency_ms,
                        error_kind: Some(failure.reason().to_string()),
                    });
                    failures.push(failure);
                }
                Outcome::Ready(ready) => {
                    let status = ready.header.status.as_u16();
                    admission.success();
                    if inbound.thinking_dropped && matches!(encoding, Encoding::Messages(_)) {
                        ctx.note = Some("thinking blocks dropped in translation");
                    }
                    ctx.attempts.push(Attempt {
                        provider_id: entry.id,
                        provider_name: entry.name.clone(),
                        status: Some(status),
                        latency_ms,
                        error_kind: None,
                    });
                    ctx.served_by = Some(entry.clone());
                    ctx.model_served = Some(served);
                    metrics::UPSTREAM_DURATION
                        .with_label_values(&[entry.kind.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    return self
                        .deliver(session, ctx, *ready, adapter, state, encoding)
                        .await;
                }
            }
        }
        let err = if let (true, Some(reason)) = (failures.is_empty(), refused) {
            GatewayError::bad_request("unsupported_request", reason)
        } else if failures.is_empty() {
            GatewayError::providers_unavailable()
        } else if failures.iter().all(|f| *f == Failure::Status(429)) {
            GatewayError::rate_limited()
        } else if failures.last() == Some(&Failure::Timeout) {
            GatewayError::upstream_timeout()
        } else {
            GatewayError::upstream_failed()
        };
        Err(err.into())
    }

    /// Streams a ready answer to the client, chunk by chunk, translating it when the
    /// provider does not speak OpenAI's format.
    async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut ready: Ready,
        adapter: Adapter,
        mut state: StreamState,
        mut encoding: Encoding,
    ) -> Result<(), Stop> {
        let status = ready.header.status.as_u16();
        ctx.status = status;
        let content_type = ready
            .header
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let sse = status < 300 && content_type.starts_with("text/event-stream");
        if !sse && encoding.rewrites_whole_body(adapter) {
            return self
                .deliver_translated(session, ctx, ready, adapter, &encoding)
                .await;
        }
        let mut h = ResponseHeader::build(status, Some(8)).map_err(Stop::Abort)?;
        let header_result = (|| -> pingora::Result<()> {
            h.insert_header(
                "content-type",
                if sse {
                    "text/event-stream; charset=utf-8"
                } else {
                    content_type.as_str()
                },
            )?;
            if sse {
                h.insert_header("cache-control", "no-cache")?;
                h.insert_header("transfer-encoding", "chunked")?;
            } else if let Some(cl) = ready.header.headers.get("content-length").cloned() {
                h.insert_header("content-length", cl)?;
            } else {
                h.insert_header("transfer-encoding", "chunked")?;
            }
            self.common_headers(&mut h, ctx)
        })();
        header_result.map_err(Stop::Abort)?;
        session
            .write_response_header(Box::new(h), false)
            .await
            .map_err(|_| Stop::ClientGone)?;
        ctx.ttfb = Some(ctx.start.elapsed());

        let mut framer = Framer::with_limit(self.upstreams.max_event_bytes);
        let mut kept = Chunks::default();
        let mut next = ready.first.take();
        let mut done = ready.done;
        let answer_deadline =
            tokio::time::Instant::from_std(ctx.start + self.upstreams.timeouts.answer);
        loop {
            if let Some(chunk) = next.take() {
                let out = if sse {
                    let Ok(events) = framer.push(&chunk) else {
                        return self
                            .end_broken_stream(
                                session,
                                ctx,
                                &state,
                                &mut encoding,
                                "upstream_event_too_large",
                            )
                            .await;
                    };
                    let mut out = BytesMut::new();
                    for event in events {
                        encoding.event(adapter, &mut state, &event, &mut out);
                    }
                    out.freeze()
                } else {
                    if kept.len() + chunk.len() <= MAX_USAGE_BODY {
                        kept.push(chunk.clone());
                    }
                    chunk
                };
                if !out.is_empty() && session.write_response_body(Some(out), false).await.is_err() {
                    self.record_stream(ctx, &state);
                    return Err(Stop::ClientGone);
                }
            }
            if done {
                break;
            }
            let read = tokio::select! {
                r = ready.session.read_response_body() => r,
                _ = session.read_body_or_idle(true) => {
                    self.record_stream(ctx, &state);
                    return Err(Stop::ClientGone);
                }
                _ = tokio::time::sleep_until(answer_deadline) => {
                    if !sse {
                        self.midstream_failure(ctx, "answer_too_long");
                        return Err(Stop::Abort(Error::explain(ErrorType::ReadTimedout, "answer too long")));
                    }
                    return self
                        .end_broken_stream(session, ctx, &state, &mut encoding, "answer_too_long")
                        .await;
                }
            };
            match read {
                Ok(Some(chunk)) => next = Some(chunk),
                Ok(None) => done = true,
                Err(e) => {
                    if !sse {
                        self.midstream_failure(ctx, "upstream_error_midstream");
                        return Err(Stop::Abort(e));
                    }
                    return self
                        .end_broken_stream(
                            session,
                            ctx,
                            &state,
                            &mut encoding,
                            "upstream_error_midstream",
                        )
                        .await;
                }
            }
        }
        if !sse {
            let (usage, content) = adapter
                .decode_response(
                    &kept.into_bytes(),
                    ctx.model_served.as_deref().unwrap_or(""),
                )
                .usage_and_content();
            ctx.usage = usage;
            ctx.content = content;
            session
                .write_response_body(None, true)
                .await
                .map_err(|_| Stop::ClientGone)?;
            self.upstreams.release(ready).await;
            return Ok(());
        }
        if let Some(rest) = framer.finish() {
            let mut out = BytesMut::new();
            encoding.event(adapter, &mut state, &rest, &mut out);
            if !out.is_empty()
                && session
                    .write_response_body(Some(out.freeze()), false)
                    .await
                    .is_err()
            {
                self.record_stream(ctx, &state);
                return Err(Stop::ClientGone);
            }
        }
        match encoding.finish(adapter, &mut state) {
            Ok(mut tail) => {
                self.record_stream(ctx, &state);
                if let Encoding::ResponsesPassthrough(p) = &encoding {
                    if let (Some(store), Some(response)) = (&p.store, &p.last) {
                        let message = responses::assistant_from_output(response);
                        self.store_response(ctx, store, response, message).await;
                    }
                }
                if let Encoding::Responses(r) = &mut encoding {
                    // Stored before the client hears it is complete, so a follow-up naming
                    // it as `previous_response_id` finds it.
                    if let Some((closing, response, message)) = r.encoder.complete() {
                        tail.extend(closing);
                        if let Some(store) = &r.store {
                            self.store_response(ctx, store, &response, message).await;
                        }
                        tail.push(r.encoder.close(&response));
                    }
                }
                for piece in tail {
                    if session
                        .write_response_body(Some(piece), false)
                        .await
                        .is_err()
                    {
                        return Err(Stop::ClientGone);
                    }
                }
                session
                    .write_response_body(None, true)
                    .await
                    .map_err(|_| Stop::ClientGone)?;
                self.upstreams.release(ready).await;
                Ok(())
            }
            Err(providers::BrokenStream) => {
                self.end_broken_stream(
                    session,
                    ctx,
                    &state,
                    &mut encoding,
                    "upstream_error_midstream",
                )
                .await
            }
        }
    }

    /// A stream that broke after the commit (`kind` says how): the client gets an error
    /// event (unless the provider's own was already passed on) and never `[DONE]`.
    async fn end_broken_stream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        state: &StreamState,
        encoding: &mut Encoding,
        kind: &'static str,
    ) -> Result<(), Stop> {
        self.midstream_failure(ctx, kind);
        self.record_stream(ctx, state);
        let message = match kind {
            "answer_too_long" => "The answer ran past the gateway's time limit.",
            "upstream_event_too_large" => "The provider sent a stream event that is too large.",
            _ => "The provider's stream broke off.",
        };
        if let Some(event) = encoding.broken(state, message, kind) {
            let _ = session.write_response_body(Some(event), false).await;
        }
        let _ = session.write_response_body(None, true).await;
        Ok(())
    }

    fn midstream_failure(&self, ctx: &mut Ctx, kind: &'static str) {
        if let Some(entry) = &ctx.served_by {
            if self.breakers.failure(entry.id, Instant::now(), None) {
                metrics::BREAKER_OPENED
                    .with_label_values(&[entry.kind.as_str()])
                    .inc();
            }
        }
        ctx.error_kind = Some(kind);
        ctx.status = 502;
    }

    /// A non-stream answer in another format: read whole (bounded), translate, send.
    async fn deliver_translated(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut ready: Ready,
        adapter: Adapter,
        encoding: &Encoding,
    ) -> Result<(), Stop> {
        let status = ready.header.status.as_u16();
        let mut body = BytesMut::new();
        if let Some(first) = ready.first.take() {
            body.extend_from_slice(&first);
        }
        let mut done = ready.done;
        let answer_deadline =
            tokio::time::Instant::from_std(ctx.start + self.upstreams.timeouts.answer);
        while !done {
            let read = tokio::select! {
                r = ready.session.read_response_body() => r,
                _ = session.read_body_or_idle(true) => return Err(Stop::ClientGone),
                _ = tokio::time::sleep_until(answer_deadline) => {
                    self.midstream_failure(ctx, "answer_too_long");
                    return Err(GatewayError::upstream_timeout().into());
                }
            };
            match read {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_USAGE_BODY => {
                    body.extend_from_slice(&chunk)
                }
                Ok(None) => done = true,
                Ok(Some(_)) | Err(_) => {
                    self.midstream_failure(ctx, "upstream_error_midstream");
                    return Err(GatewayError::upstream_failed().into());
                }
            }
        }
        let served = ctx.model_served.as_deref().unwrap_or("");
        let out = if status < 300 {
            let decoded = adapter.decode_response(&body, served);
            let out = decoded
                .body
                .clone()
                .unwrap_or_else(|| body.clone().freeze());
            let (mut usage, content) = decoded.usage_and_content();
            let out = match encoding {
                Encoding::Messages(_) => {
                    let completion: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
                    Bytes::from(
                        messages::from_completion(&completion, served, usage.as_ref()).to_string(),
                    )
                }
                Encoding::ResponsesPassthrough(p) => {
                    let response: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Some(store) = &p.store {
                        let message = responses::assistant_from_output(&response);
                        self.store_response(ctx, store, &response, message).await;
                    }
                    usage = responses::usage_of(&response);
                    body.clone().freeze()
                }
                Encoding::Responses(r) => {
                    let completion: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
                    let (response, message) =
                        responses::from_completion(&completion, &r.echo, usage.as_ref());
                    if let Some(store) = &r.store {
                        self.store_response(ctx, store, &response, message).await;
                    }
                    Bytes::from(response.to_string())
                }
                _ => out,
            };
            ctx.usage = usage;
            ctx.content = content;
            out
        } else {
            let out = adapter
                .error_body(status, &body)
                .unwrap_or_else(|| body.clone().freeze());
            match encoding {
                Encoding::Messages(_) => messages::from_openai_error(status, &out),
                _ => out,
            }
        };
        let mut h = ResponseHeader::build(status, Some(6)).map_err(Stop::Abort)?;
        let built = (|| -> pingora::Result<()> {
            h.insert_header("content-type", "application/json")?;
            h.insert_header("content-length", out.len().to_string())?;
            self.common_headers(&mut h, ctx)
        })();
        built.map_err(Stop::Abort)?;
        session
            .write_response_header(Box::new(h), false)
            .await
            .map_err(|_| Stop::ClientGone)?;
        ctx.ttfb = Some(ctx.start.elapsed());
        session
            .write_response_body(Some(out), true)
            .await
            .map_err(|_| Stop::ClientGone)?;
        self.upstreams.release(ready).await;
        Ok(())
    }

    fn record_stream(&self, ctx: &mut Ctx, state: &StreamState) {
        ctx.usage = state.usage;
        ctx.content = state.content.clone();
    }

    fn finish_record(&self, ctx: &Ctx) -> Option<LogRecord> {
        build_record(ctx, &self.pricing)
    }
}

/// The log record of a finished request (`None` for routes that are not logged).
fn build_record(ctx: &Ctx, pricing: &Pricing) -> Option<LogRecord> {
    let door = ctx.door?;
    let entry = ctx.served_by.as_ref();
    let kind = entry.map_or("none", |e| e.kind.as_str());
    let reached_provider = entry.is_some();
    let (usage, source) = match ctx.usage {
        Some(u) if ctx.status != 499 => (u, UsageSource::Provider),
        Some(u) => (u, UsageSource::Estimated),
        None if reached_provider => (
            Usage {
                prompt_tokens: ctx.request.as_deref().map_or(0, tokens::prompt),
                completion_tokens: ctx.content.tokens(),
                ..Default::default()
            },
            UsageSource::Estimated,
        ),
        None => (Usage::default(), UsageSource::None),
    };
    let usage = usage.clamped();
    let cost = match (&ctx.model_served, reached_provider) {
        (Some(m), true) => {
            let c = pricing.cost_nusd(m, &usage.counts());
            if c.is_none() {
                metrics::UNPRICED.with_label_values(&[kind]).inc();
            }
            c
        }
        _ => None,
    };
    metrics::TOKENS
        .with_label_values(&[kind, "prompt"])
        .inc_by(usage.prompt_tokens);
    metrics::TOKENS
        .with_label_values(&[kind, "completion"])
        .inc_by(usage.completion_tokens);
    if let Some(c) = cost {
        metrics::COST
            .with_label_values(&[kind])
            .inc_by(c as f64 / 1e9);
    }
    ctx.limits.settle(
        usage.prompt_tokens + usage.completion_tokens,
        cost.unwrap_or(0),
    );
    let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    Some(LogRecord {
        id: ctx.request_id,
        created_at: ctx.started_at,
        workspace_id: ctx.key.as_ref().map(|k| k.workspace_id),
        api_key_id: ctx.key.as_ref().map(|k| k.id),
        provider_id: entry.map(|e| e.id),
        provider_name: entry.map(|e| e.name.clone()),
        provider_kind: entry.map(|e| e.kind.as_str().to_string()),
        route: door.label().to_string(),
        model_requested: ctx.model_requested.clone(),
        model_served: ctx.model_served.clone(),
        status: i16::try_from(ctx.status).unwrap_or(0),
        error_kind: ctx
            .limits
            .refused_kind()
            .or(ctx.error_kind)
            .map(str::to_string),
        streamed: ctx.streamed,
        prompt_tokens: clamp(usage.prompt_tokens),
        completion_tokens: clamp(usage.completion_tokens),
        total_tokens: clamp(usage.prompt_tokens + usage.completion_tokens), // both ≤ 10^8
        cost_nusd: cost,
        usage_source: source,
        latency_ms: clamp(ctx.start.elapsed().as_millis() as u64),
        ttfb_ms: ctx.ttfb.map(|t| clamp(t.as_millis() as u64)),
        attempts: ctx.attempts.clone(),
        note: ctx.note.map(str::to_string),
    })
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            request_id: Uuid::now_v7(),
            door: None,
            key: None,
            model_requested: None,
            model_served: None,
            served_by: None,
            attempts: Vec::new(),
            status: 0,
            error_kind: None,
            streamed: false,
            usage: None,
            request: None,
            content: Generated::default(),
            ttfb: None,
            logged: false,
            error_shape: Door::Chat,
            note: None,
            sink: self.sink.clone(),
            pricing: self.pricing.clone(),
            limits: limits::Gate::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        // Every line logged while the request runs carries its id (a warn-level span, so
        // it is on whenever warnings are).
        let span = tracing::warn_span!("request", request_id = %ctx.request_id);
        match self.handle(session, ctx).instrument(span).await {
            Ok(()) => Ok(true),
            Err(Stop::Respond(err)) => {
                ctx.status = err.status;
                ctx.error_kind = Some(err.code);
                let body = ctx.error_shape.error_body(&err).to_vec();
                let _ = self.write_json(session, ctx, err.status, body).await;
                Ok(true)
            }
            Err(Stop::ClientGone) => {
                ctx.status = 499;
                ctx.error_kind = Some("client_disconnected");
                Ok(true)
            }
            Err(Stop::Abort(e)) => {
                if ctx.error_kind.is_none() {
                    ctx.error_kind = Some("internal_error");
                }
                Err(e)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Every request is answered in `request_filter`.
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream phase in this gateway",
        ))
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.status == 499 || ctx.error_kind == Some("upstream_error_midstream")
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.door.map_or("other", Door::label);
        let kind = ctx.served_by.as_ref().map_or("none", |e| e.kind.as_str());
        metrics::REQUESTS
            .with_label_values(&[route, kind, metrics::status_class(ctx.status)])
            .inc();
        metrics::REQUEST_DURATION
            .with_label_values(&[route])
            .observe(ctx.start.elapsed().as_secs_f64());
        if let Some(t) = ctx.ttfb {
            metrics::TTFB
                .with_label_values(&[kind])
                .observe(t.as_secs_f64());
        }
        ctx.logged = true;
        if let Some(record) = self.finish_record(ctx) {
            self.sink.send(record);
        }
    }
}

impl Drop for Ctx {
    /// A request whose task was dropped before `logging` ran — cut off when the shutdown
    /// grace period ended — still gets its one record.
    fn drop(&mut self) {
        if self.logged || self.door.is_none() {
            return;
        }
        self.logged = true;
        self.error_kind = Some("cancelled_at_shutdown");
        if self.status == 0 || self.status == 200 {
            self.status = 503;
        }
        if let Some(record) = build_record(self, &self.pricing) {
            self.sink.send(record);
        }
    }
}
