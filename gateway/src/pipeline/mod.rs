//! The one pipeline every front door goes through, as methods of [`Services`]: what the
//! request is ([`dispatch`]) → authenticate → read the request ([`body`]) → route → limit
//! → prepare it (the door's decoder) → attempt with fallback ([`attempt`]) → deliver
//! through the door's translation ([`deliver`], [`respond`]) → record ([`record`], from
//! the request's state [`ctx`] when Pingora's `logging` phase ends it). Nothing here
//! knows a door's wire format, and nothing here knows Pingora's phases: `proxy` calls in,
//! never the reverse.

pub mod attempt;
pub mod body;
pub mod cached;
pub mod ctx;
pub mod deliver;
pub mod dispatch;
pub mod record;
pub mod respond;
pub mod trace;

pub use dispatch::{ResponseStore, Services};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use pingora::proxy::Session;
use uuid::Uuid;

use crate::auth::{AuthError, AuthedKey};
use crate::cache::flights::{FlightKey, Role};
use crate::cache::record::Recorder;
use crate::cache::{self, Decision};
use crate::errors::GatewayError;
use crate::frontdoor::{self, Door, Inbound};
use crate::limits::{Admission, Part};
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
        ctx.trace.authenticate();
        let key = self.authenticate(session, ctx.client, Some(door)).await?;
        ctx.key = Some(key.clone());
        let request = body::read_json(session, self.body).await?;
        ctx.model_requested = Some(request.model.clone());
        let stream = door.streams() && request.body.stream();
        ctx.streamed = stream;
        let body = Arc::new(request.body);
        ctx.request = Some(body.clone());

        ctx.trace.route();
        let routes = self.entries(key.workspace_id).await?;
        ctx.capture_content = routes.tracing.capture_content;
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
        ctx.trace.routed(candidates.len(), None);
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
        let decision = self.cache_decision(session, &key, &routes)?;
        ctx.cache = match decision {
            Decision::Off => None,
            Decision::Bypass => Some(Box::new(cache::Use::new(cache::CacheResult::Bypass))),
            Decision::Use(_) => Some(Box::new(cache::Use::new(cache::CacheResult::Miss))),
        };
        let lookup = matches!(decision, Decision::Use(p) if p.read);
        // Limits before the door's preparation: a request they refuse never makes the
        // gateway read what it would have needed (a stored conversation). The estimate is
        // the request's own body; before a cache lookup none is held (a hit costs no
        // tokens and no spend), and a miss holds it then.
        let admission = |part| Admission {
            part,
            model,
            priced_model: priced_model.as_deref(),
            request: &body,
            numbers: request.numbers,
        };
        let part = if lookup { Part::Counted } else { Part::Whole };
        ctx.limits = self
            .limiter
            .admit(&key, admission(part), &self.pricing)
            .await;
        ctx.limits.check()?;
        ctx.trace.authenticated(None);
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
            numbers: request.numbers,
        };
        if let Decision::Use(plan) = decision {
            let Some(cache_key) = self.cache_key(session, ctx, &routes, &inbound) else {
                if lookup {
                    self.limiter
                        .reserve(&mut ctx.limits, &key, admission(Part::Whole), &self.pricing)
                        .await;
                    ctx.limits.check()?;
                }
                ctx.cache = Some(Box::new(cache::Use::new(cache::CacheResult::Bypass)));
                return self.attempt_all(session, ctx, &candidates, &inbound).await;
            };
            let mut leading = None;
            if plan.read {
                if let Some(stored) = self
                    .cache
                    .get(&cache_key, plan.max_age, cache::now_ms())
                    .await
                {
                    if self.serve_hit(session, ctx, &inbound, stored).await? {
                        return Ok(());
                    }
                }
                let flight = FlightKey {
                    key: cache_key,
                    streamed: stream,
                };
                match self.cache.flights.join(flight) {
                    Role::Follow(following) => {
                        if self.follow(session, ctx, &inbound, following).await? {
                            return Ok(());
                        }
                    }
                    Role::Lead(lead) => leading = Some(lead),
                    Role::Alone => {}
                }
                self.limiter
                    .reserve(&mut ctx.limits, &key, admission(Part::Whole), &self.pricing)
                    .await;
                ctx.limits.check()?;
            }
            if let Some(c) = &mut ctx.cache {
                c.store = Some((cache_key, plan.ttl));
                c.recorder = Some(
                    Recorder::new(
                        stream,
                        self.upstreams.max_event_bytes,
                        self.cache.max_entry_bytes,
                    )
                    .leading(leading),
                );
            }
        }
        self.attempt_all(session, ctx, &candidates, &inbound).await
    }
}
