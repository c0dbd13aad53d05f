//! What a request is: a route answered here (health, models, token counting, stored
//! responses) or a front door's pipeline ([`Services::run`]), and who sent it.

use std::sync::Arc;

use bytes::Bytes;
use perpetuo_core::pricing::Pricing;
use pingora::proxy::Session;
use serde_json::Value;

use super::body;
use super::ctx::{Ctx, Stop};
use super::respond;
use crate::auth::KeyCache;
use crate::clients::Clients;
use crate::errors::GatewayError;
use crate::frontdoor::{anthropic_messages, models, Door};
use crate::limits::Limiter;
use crate::log_writer::LogSink;
use crate::model_lists::ModelLists;
use crate::routing::{Balancer, Breakers, EntryCache, Headrooms};
use crate::upstream::Upstreams;

pub use crate::stored_responses::ResponseStore;

/// What answering a request needs: the caches, the upstream connector, the limiter,
/// the log sink and the stores. The pipeline's stages are its methods.
pub struct Services {
    /// When a shutdown's grace period ends (requests cut then are not their clients').
    pub shutdown: Arc<crate::shutdown::Shutdown>,
    /// Who a request comes from, and the cap on one client behind a trusted proxy.
    pub clients: Arc<Clients>,
    pub keys: Arc<KeyCache>,
    pub entries: Arc<EntryCache>,
    pub breakers: Arc<Breakers>,
    pub balancer: Balancer,
    /// What each provider key has left, as its provider reported.
    pub headrooms: Arc<Headrooms>,
    pub upstreams: Upstreams,
    pub pricing: Arc<Pricing>,
    /// What the providers of OpenAI-compatible entries serving any model list.
    pub model_lists: ModelLists,
    pub sink: LogSink,
    /// How large a request body may be, and how long it may take to arrive.
    pub body: body::BodyLimits,
    /// Where the Responses API keeps stored responses.
    pub responses: ResponseStore,
    pub limiter: Arc<Limiter>,
    /// The response cache.
    pub cache: crate::cache::ResponseCache,
    /// Where proxied requests' spans go, when tracing is on.
    pub tracer: Option<Arc<perpetuo_core::telemetry::Exporter>>,
    /// Whether changes are heard yet (`/healthz` says not ready until then).
    pub hearing: Arc<crate::invalidation::Hearing>,
}

impl Services {
    /// Answers the request: a route served here, or a front door's pipeline.
    pub async fn dispatch(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Stop> {
        // A body left unread after the answer is drained for a bounded time only.
        session.set_total_drain_timeout(Some(body::DRAIN_DEADLINE));
        self.identify_client(session, ctx)?;
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        let body = match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") if !self.hearing.ready() => {
                ctx.status = 503;
                return respond::json(
                    session,
                    ctx,
                    503,
                    Bytes::from_static(br#"{"status":"starting"}"#),
                )
                .await
                .map_err(Stop::Abort);
            }
            ("GET", "/healthz") => Bytes::from_static(br#"{"status":"ok"}"#),
            ("GET", "/v1/responses") if websocket_upgrade(session) => {
                return Err(GatewayError::websocket_not_supported(&path).into());
            }
            ("GET", "/v1/models") => {
                // Anthropic's clients say so with `anthropic-version`: their key may come
                // as `x-api-key`, and they get Anthropic's list and error shapes.
                let anthropic = session
                    .req_header()
                    .headers
                    .contains_key("anthropic-version");
                let door = anthropic.then_some(Door::Messages);
                if let Some(door) = door {
                    ctx.error_shape = door;
                }
                let key = self.authenticate(session, ctx.client, door).await?;
                let routes = self.entries(key.workspace_id).await?;
                let listed = models::list(
                    &routes.entries,
                    &self.pricing,
                    &self.model_lists,
                    &self.upstreams,
                )
                .await;
                json_bytes(&if anthropic {
                    models::anthropic_shape(&listed)
                } else {
                    listed
                })
            }
            ("POST", "/v1/messages/count_tokens") => {
                ctx.error_shape = Door::Messages;
                self.authenticate(session, ctx.client, Some(Door::Messages))
                    .await?;
                let request = body::read_json(session, self.body).await?;
                json_bytes(&anthropic_messages::door::count_tokens(request.body))
            }
            ("GET" | "DELETE", p) if p.starts_with("/v1/responses/") => {
                let key = self.authenticate(session, ctx.client, None).await?;
                json_bytes(&self.responses.serve(&key, &method, p).await?)
            }
            _ => {
                return match Door::for_route(&method, &path) {
                    Some(door) => self.run(session, ctx, door).await,
                    None => match allowed_methods(&path) {
                        Some(allow) => {
                            ctx.allow = Some(allow);
                            Err(GatewayError::method_not_allowed(&method, &path, allow).into())
                        }
                        None => Err(GatewayError::not_found(&path).into()),
                    },
                }
            }
        };
        ctx.status = 200;
        respond::json(session, ctx, 200, body)
            .await
            .map_err(Stop::Abort)
    }
}

impl Services {
    /// Reads who sent the request (behind a trusted proxy: from `X-Forwarded-For`) and,
    /// for a request through a trusted proxy, takes its place among its client's
    /// requests in flight.
    fn identify_client(&self, session: &Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
        let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        else {
            return Ok(());
        };
        let forwarded = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        let client = self.clients.client(peer, forwarded);
        ctx.client = Some(client);
        if self.clients.is_proxy(peer) {
            let slot = self
                .clients
                .admit(client)
                .ok_or_else(GatewayError::client_busy)?;
            ctx.client_slot = Some(slot);
        }
        Ok(())
    }
}

/// Whether the request asks to become a WebSocket (`Upgrade: websocket`).
fn websocket_upgrade(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all("upgrade")
        .iter()
        .any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
        })
}

/// The methods a known route answers (for a 405's `Allow`), `None` for an unknown path.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/healthz" | "/v1/models" => Some("GET"),
        "/v1/chat/completions"
        | "/v1/embeddings"
        | "/v1/messages"
        | "/v1/messages/count_tokens"
        | "/v1/responses" => Some("POST"),
        p if p.starts_with("/v1/responses/") && p.ends_with("/input_items") => Some("GET"),
        p if p.starts_with("/v1/responses/") => Some("GET, DELETE"),
        _ => None,
    }
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}
