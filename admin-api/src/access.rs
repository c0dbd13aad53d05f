//! Who may call what. [`RULES`] is the one table: every route of the API with the least
//! access it needs — public, any signed-in user, or a role in the workspace named by the
//! path's `{id}`. [`enforce`] runs on every route before its handler: it answers 401
//! without a valid session, 404 to a user who is not a member of the workspace (revealing
//! nothing), 403 `insufficient_role` below the route's role, and 500 for a route missing
//! from the table, so a route cannot ship without a rule. Handlers read the checked
//! membership with the [`Member`] extractor.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use perpetuo_core::db::workspaces::{Role, Workspace};
use perpetuo_core::db::{self, DbError};
use serde_json::Value;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::OpenApi;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{client_ip, parse_id, AuthUser};
use crate::state::AppState;

/// The least a caller needs for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user; not tied to a workspace.
    User,
    /// At least this role in the workspace `{id}`.
    Role(Role),
}

impl Access {
    pub fn label(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::User => "user",
            Access::Role(r) => r.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

use Access::{Public, User};
const VIEWER: Access = Access::Role(Role::Viewer);
const MEMBER: Access = Access::Role(Role::Member);
const ADMIN: Access = Access::Role(Role::Admin);
const OWNER: Access = Access::Role(Role::Owner);

/// Every route and the least access it needs. Members manage only the API keys they
/// created; admins manage every key (checked in the key handlers, on top of this table).
pub const RULES: &[Rule] = &[
    rule("GET", "/healthz", Public),
    rule("GET", "/meta", Public),
    rule("GET", "/openapi.json", Public),
    rule("POST", "/auth/signup", Public),
    rule("POST", "/auth/login", Public),
    rule("POST", "/auth/refresh", Public),
    rule("POST", "/auth/verify-email", Public),
    rule("POST", "/auth/password-reset", Public),
    rule("POST", "/auth/password-reset/confirm", Public),
    rule("POST", "/auth/logout", User),
    rule("POST", "/auth/password", User),
    rule("GET", "/auth/me", User),
    rule("GET", "/auth/events", User),
    rule("POST", "/auth/verify-email/resend", User),
    rule("POST", "/invitations/accept", User),
    rule("GET", "/workspaces", User),
    rule("POST", "/workspaces", User),
    rule("GET", "/workspaces/{id}", VIEWER),
    rule("PUT", "/workspaces/{id}", ADMIN),
    rule("PATCH", "/workspaces/{id}", ADMIN),
    rule("DELETE", "/workspaces/{id}", OWNER),
    rule("DELETE", "/workspaces/{id}/cache", ADMIN),
    rule("POST", "/workspaces/{id}/transfer", OWNER),
    rule("POST", "/workspaces/{id}/leave", VIEWER),
    rule("GET", "/workspaces/{id}/members", VIEWER),
    rule("PUT", "/workspaces/{id}/members/{uid}", ADMIN),
    rule("DELETE", "/workspaces/{id}/members/{uid}", ADMIN),
    rule("GET", "/workspaces/{id}/invitations", ADMIN),
    rule("POST", "/workspaces/{id}/invitations", ADMIN),
    rule("DELETE", "/workspaces/{id}/invitations/{iid}", ADMIN),
    rule("GET", "/workspaces/{id}/providers", MEMBER),
    rule("POST", "/workspaces/{id}/providers", ADMIN),
    rule("PUT", "/workspaces/{id}/providers/{pid}", ADMIN),
    rule("DELETE", "/workspaces/{id}/providers/{pid}", ADMIN),
    rule("GET", "/workspaces/{id}/providers/{pid}/keys", MEMBER),
    rule("POST", "/workspaces/{id}/providers/{pid}/keys", ADMIN),
    rule(
        "PATCH",
        "/workspaces/{id}/providers/{pid}/keys/{key_id}",
        ADMIN,
    ),
    rule(
        "DELETE",
        "/workspaces/{id}/providers/{pid}/keys/{key_id}",
        ADMIN,
    ),
    rule("GET", "/workspaces/{id}/api-keys", MEMBER),
    rule("POST", "/workspaces/{id}/api-keys", MEMBER),
    rule("PUT", "/workspaces/{id}/api-keys/{kid}", MEMBER),
    rule("DELETE", "/workspaces/{id}/api-keys/{kid}", MEMBER),
    rule("POST", "/workspaces/{id}/api-keys/{kid}/revoke", MEMBER),
    rule("GET", "/workspaces/{id}/api-keys/{kid}/limits", MEMBER),
    rule("GET", "/workspaces/{id}/logs", VIEWER),
    rule("GET", "/workspaces/{id}/usage", VIEWER),
    rule("GET", "/workspaces/{id}/usage/by-provider", VIEWER),
    rule("GET", "/workspaces/{id}/audit", ADMIN),
];

/// The rule of a route (`HEAD` is served and ruled as `GET`).
pub fn find(method: &Method, path: &str) -> Option<&'static Rule> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    RULES.iter().find(|r| r.method == method && r.path == path)
}

/// A checked member of the workspace named by the path: the caller, the workspace with
/// the caller's role, and what the audit log records about the request.
#[derive(Debug, Clone)]
pub struct Member {
    pub user: AuthUser,
    pub workspace: Workspace,
    pub email: String,
    pub email_verified: bool,
    pub ip: Option<IpAddr>,
}

impl Member {
    pub fn role(&self) -> Role {
        self.workspace.role
    }

    /// 403 unless the caller has at least `role` (for checks finer than the route's).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role() >= role {
            Ok(())
        } else {
            Err(insufficient(role, self.role()))
        }
    }

    /// 403 `email_unverified` when verification is required and this account has not
    /// verified its email (it may not create API keys or providers yet).
    pub fn require_verified(&self, state: &AppState) -> Result<(), ApiError> {
        if state.verification_required && !self.email_verified {
            return Err(ApiError::forbidden(
                "email_unverified",
                "verify your email address first: follow the link we sent, or ask for a new one with POST /auth/verify-email/resend",
            ));
        }
        Ok(())
    }

    /// An audit entry of this member's request in this workspace.
    pub fn audit<'a>(
        &'a self,
        action: &'a str,
        target_type: &'a str,
        target_id: impl ToString,
        before: Option<Value>,
        after: Option<Value>,
    ) -> db::audit::NewEntry<'a> {
        db::audit::NewEntry {
            workspace_id: Some(self.workspace.id),
            actor_id: Some(self.user.id),
            actor_email: Some(&self.email),
            ip: self.ip,
            action,
            target_type: Some(target_type),
            target_id: Some(target_id.to_string()),
            before,
            after,
        }
    }
}

pub fn insufficient(needed: Role, have: Role) -> ApiError {
    ApiError::forbidden(
        "insufficient_role",
        format!("this action needs the {needed} role or higher; your role is {have}"),
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Member>()
            .cloned()
            .ok_or_else(|| ApiError::internal("Member used on a route whose rule has no role"))
    }
}

/// The middleware that applies [`RULES`]; see the module documentation.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match admit(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn admit(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .ok_or_else(|| ApiError::internal("access check outside a matched route"))?;
    let rule = find(&parts.method, &path)
        .ok_or_else(|| ApiError::internal(format!("no access rule for {} {path}", parts.method)))?;
    match rule.access {
        Access::Public => {}
        Access::User => {
            let user = AuthUser::from_request_parts(&mut parts, state).await?;
            parts.extensions.insert(user);
        }
        Access::Role(least) => {
            let user = AuthUser::from_request_parts(&mut parts, state).await?;
            parts.extensions.insert(user);
            let Path(params) =
                Path::<HashMap<String, String>>::from_request_parts(&mut parts, state)
                    .await
                    .map_err(|_| ApiError::NotFound)?;
            let id: Uuid = parse_id(params.get("id").map(String::as_str).unwrap_or_default())?;
            let client = state.pool.get().await.map_err(DbError::from)?;
            let found = db::workspaces::membership(&client, id, user.id)
                .await?
                .ok_or(ApiError::NotFound)?;
            drop(client);
            if found.workspace.role < least {
                return Err(insufficient(least, found.workspace.role));
            }
            let ip = client_ip(&parts, &state.trusted_proxies);
            parts.extensions.insert(Member {
                user,
                workspace: found.workspace,
                email: found.email,
                email_verified: found.email_verified,
                ip,
            });
        }
    }
    Ok(Request::from_parts(parts, body))
}

/// Writes each route's rule into the OpenAPI document: an `x-required-role` extension
/// and a line in the description.
pub fn document(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", item.get.as_mut()),
            ("POST", item.post.as_mut()),
            ("PUT", item.put.as_mut()),
            ("DELETE", item.delete.as_mut()),
            ("PATCH", item.patch.as_mut()),
        ];
        for (method, op) in ops {
            let (Some(op), Some(rule)) = (
                op,
                RULES
                    .iter()
                    .find(|r| r.method == method && r.path == path.as_str()),
            ) else {
                continue;
            };
            let needs = match rule.access {
                Access::Public => "Access: public.".to_string(),
                Access::User => "Access: any signed-in user.".to_string(),
                Access::Role(r) => format!("Access: the `{r}` role or higher in the workspace."),
            };
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                _ => needs,
            });
            let ext = ExtensionsBuilder::new()
                .add("x-required-role", rule.access.label())
                .build();
            match op.extensions.as_mut() {
                Some(e) => e.merge(ext),
                None => op.extensions = Some(ext),
            }
        }
    }
}

/// The non-secret fields of a response body, as the audit log keeps them.
pub fn snapshot<T: serde::Serialize>(value: &T) -> Option<Value> {
    serde_json::to_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_rule_per_route_and_roles_only_on_workspace_routes() {
        for (i, a) in RULES.iter().enumerate() {
            for b in &RULES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} has two rules",
                    a.method,
                    a.path
                );
            }
            let scoped = a.path.starts_with("/workspaces/{id}");
            assert_eq!(
                matches!(a.access, Access::Role(_)),
                scoped,
                "{} {}: a role needs the workspace in the path, and a workspace route needs a role",
                a.method,
                a.path
            );
        }
        assert_eq!(
            find(&Method::HEAD, "/healthz").map(|r| r.access),
            Some(Access::Public)
        );
        assert!(find(&Method::PATCH, "/workspaces/{id}/providers").is_none());
    }
}
