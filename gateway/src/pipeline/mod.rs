//! The one pipeline every front door goes through, as methods of [`Services`]: what the
//! request is ([`dispatch`]) → authenticate → read the request ([`body`]) → route → limit
//! → prepare it (the door's decoder) → attempt with fallback ([`attempt`]) → deliver
//! through the door's translation ([`deliver`], [`respond`]) → record ([`record`], from
//! the request's state [`ctx`] when Pingora's `logging` phase ends it). Nothing here
//! knows a door's wire format, and nothing here knows Pingora's phases: `proxy` calls in,
//! never the reverse.

pub mod attempt;
pub mod body;
pub mod ctx;
pub mod deliver;
pub mod dispatch;
pub mod record;
pub mod respond;

pub use dispatch::{ResponseStore, Services};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use pingora::proxy::Session;
use uuid::Uuid;

use crate::auth::{AuthError, AuthedKey};
use crate::errors::GatewayError;
use crate::frontdoor::{self, Door, Inbound};
use crate::limits::Admission;
use crate::routing::{order, split_pinned, sticky, Entry, Routes};
use ctx::{Ctx, Stop};
use perpetuo_wire::Call;

impl Services {
    /// The caller's key, from the cache (the database only on a miss). `client` is the
    /// request's client (`Ctx::client`); a request without one (a Unix socket) counts as
    /// the unspecified address.
    pub(crate) async fn authenticate(
        &self,
        session: &Session,
        client: Option<IpAddr>,
        door: Option<Door>,
    ) -> Result<Arc<AuthedKey>, GatewayError> {
        let token = frontdoor::credentials(session, door).ok_or_else(GatewayError::missing_key)?;
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.keys
            .authenticate(token, client)
            .await
            .map_err(|e| match e {
                AuthError::Invalid => GatewayError::invalid_key(),
                AuthError::Unavailable => GatewayError::auth_unavailable(),
                AuthError::Throttled(wait) => GatewayError::too_many_failed_lookups(
                    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                ),
            })
    }

    /// A workspace's provider entries, from the cache.
    pub(crate) async fn entries(&self, workspace: Uuid) -> Result<Arc<Routes>, GatewayError> {
        self.entries
            .entries(workspace)
            .await
            .map_err(|_| GatewayError::routing_unavailable())
    }

    /// Runs one proxied request through the pipeline for its front door.
    pub(crate) async fn run(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        door: Door,
    ) -> Result<(), Stop> {
        ctx.door = Some(door);
        ctx.error_shape = door;
        // A client that stops reading must not hold a stream forever.
        session.set_write_timeout(Some(self.upstreams.timeouts.idle));
        let key = self.authenticate(session, ctx.client, Some(door)).await?;
        ctx.key = Some(key.clone());
        let request = body::read_json(session, self.body).await?;
        ctx.model_requested = Some(request.model.clone());
        let stream = door.streams() && request.body.stream();
        ctx.streamed = stream;
        let body = Arc::new(request.body);
        ctx.request = Some(body.clone());

        let routes = self.entries(key.workspace_id).await?;
        let (pinned, model) = split_pinned(&request.model);
        // Only a workspace that sticks conversations to entries builds the body's tree for it.
        let sticky = routes.routing.sticky.then(|| sticky::key(&body)).flatten();
        let mut candidates = order(
            &routes,
            model,
            pinned,
            door.operation(),
            &self.balancer,
            sticky,
        );
        if candidates.is_empty() {
            return Err(GatewayError::model_not_found(&request.model).into());
        }
        let priced = |e: &Arc<Entry>| self.pricing.price(e.served_model(model)).is_some();
        let priced_model = candidates
            .iter()
            .find(|e| priced(e))
            .map(|e| e.served_model(model).to_string());
        if key.policy.has_budget() {
            // Under a budget only what can be charged is served.
            candidates.retain(priced);
        }
        // Limits before the door's preparation: a request they refuse never makes the
        // gateway read what it would have needed (a stored conversation). The estimate is
        // the request's own body.
        let admission = Admission {
            model,
            priced_model: priced_model.as_deref(),
            request: &body,
            numbers: request.numbers,
        };
        ctx.limits = self.limiter.admit(&key, admission, &self.pricing).await;
        ctx.limits.check()?;
        let prepared = frontdoor::prepare(door, session, &body, &key, &self.responses).await?;
        if let Some(chat) = prepared.pivot() {
            ctx.request = Some(chat.clone());
        }
        let inbound = Inbound {
            door,
            call: Call {
                route: door.operation(),
                request: &body,
                model,
                stream,
            },
            prepared: &prepared,
        };
        self.attempt_all(session, ctx, &candidates, &inbound).await
    }
}
