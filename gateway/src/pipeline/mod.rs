//! The one pipeline every front door goes through: authenticate → read and prepare the
//! request (the door's decoder) → route → limit → attempt with fallback ([`attempt`]) →
//! deliver through the door's encoder ([`deliver`]) → record ([`record`], from
//! `logging`). Nothing here knows a door's wire format.

pub mod attempt;
pub mod deliver;
pub mod record;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use pingora::proxy::Session;
use uuid::Uuid;

use crate::auth::{AuthError, AuthedKey};
use crate::errors::GatewayError;
use crate::frontdoor::{self, Door, Inbound};
use crate::providers::Call;
use crate::proxy::body;
use crate::proxy::ctx::{Ctx, Stop};
use crate::proxy::Gateway;
use crate::routing::{order, split_pinned, Entry};

/// The client's address: the TCP peer (a connection without one, such as a Unix socket,
/// counts as the unspecified address).
fn client_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

impl Gateway {
    /// The caller's key, from the cache (the database only on a miss).
    pub(crate) async fn authenticate(
        &self,
        session: &Session,
        door: Option<Door>,
    ) -> Result<Arc<AuthedKey>, GatewayError> {
        let token = frontdoor::credentials(session, door).ok_or_else(GatewayError::missing_key)?;
        self.keys
            .authenticate(token, client_ip(session))
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
    pub(crate) async fn entries(
        &self,
        workspace: Uuid,
    ) -> Result<Arc<Vec<Arc<Entry>>>, GatewayError> {
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
        let key = self.authenticate(session, Some(door)).await?;
        ctx.key = Some(key.clone());
        let request = body::read_json(session, self.max_body_bytes).await?;
        ctx.model_requested = Some(request.model.clone());
        let stream = door.streams() && request.body.stream();
        ctx.streamed = stream;
        let prepared =
            frontdoor::prepare(door, session, &request.body, &key, &self.responses).await?;
        let body = Arc::new(request.body);
        ctx.request = Some(match prepared.pivot() {
            Some(chat) => chat.clone(),
            None => body.clone(),
        });

        let entries = self.entries(key.workspace_id).await?;
        let (pinned, model) = split_pinned(&request.model);
        let candidates = order(&entries, model, pinned, door.operation(), self.turns.next());
        if candidates.is_empty() {
            return Err(GatewayError::model_not_found(&request.model).into());
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
        ctx.limits = self.limiter.admit(&key, model, &body, &self.pricing).await;
        ctx.limits.check()?;
        self.attempt_all(session, ctx, &candidates, &inbound).await
    }
}
