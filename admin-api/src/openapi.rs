//! The OpenAPI document, assembled from the handlers' own annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Perpetuo admin API", description = "Accounts, workspaces and their members, provider entries, API keys, logs, usage and the audit log of the Perpetuo LLM gateway. Each operation states the least access it needs (`x-required-role`: public, user, viewer, member, admin or owner)."),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "workspaces"), (name = "members"), (name = "audit"), (name = "providers"), (name = "api-keys"), (name = "logs"), (name = "usage"), (name = "meta"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
