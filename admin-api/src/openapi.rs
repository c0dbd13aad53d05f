//! The OpenAPI document, assembled from the handlers' own annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Perpetuo admin API", description = "Accounts, workspaces, provider entries, API keys, logs and usage of the Perpetuo LLM gateway."),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "workspaces"), (name = "providers"), (name = "api-keys"), (name = "logs"), (name = "usage"), (name = "meta"))
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
