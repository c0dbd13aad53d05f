//! The OpenAPI document, assembled from the handlers' own annotations.

use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, Schema, Type};
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

/// Changes made once every route's schemas are in the document (modifiers of [`ApiDoc`]
/// run before the routes are merged).
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    ProviderCreate.modify(doc);
}

/// `ProviderInput` serves create and update alike, where update takes any subset; the
/// create operation gets its own schema, `ProviderCreate`, naming the fields create needs
/// (`kind`, `name`) as required and not nullable. Its keys are `api_key` or `keys`, one of
/// them required except for an `openai_compatible` server that needs none: a rule of two
/// fields, stated in the schema's description.
struct ProviderCreate;

const PROVIDER_CREATE_PATH: &str = "/workspaces/{id}/providers";
const PROVIDER_CREATE_REQUIRED: [&str; 2] = ["kind", "name"];

impl Modify for ProviderCreate {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(input))) = components.schemas.get("ProviderInput") else {
            return;
        };
        let mut create = input.clone();
        create.description = Some(
            "Body of a new provider entry: `kind` and `name` are required, and its provider \
                  keys as `api_key` (one key) or `keys` (a pool of up to 32), not both; only an \
                  `openai_compatible` entry may have none."
                .into(),
        );
        for field in PROVIDER_CREATE_REQUIRED {
            if let Some(RefOr::T(Schema::Object(prop))) = create.properties.get_mut(field) {
                // `["string", "null"]` becomes `"string"`.
                if let utoipa::openapi::schema::SchemaType::Array(types) = &prop.schema_type {
                    if let Some(t) = types.iter().find(|t| **t != Type::Null).cloned() {
                        prop.schema_type = utoipa::openapi::schema::SchemaType::Type(t);
                    }
                }
            }
            if !create.required.iter().any(|r| r == field) {
                create.required.push(field.to_string());
            }
        }
        components
            .schemas
            .insert("ProviderCreate".into(), RefOr::T(Schema::Object(create)));
        let Some(item) = openapi.paths.paths.get_mut(PROVIDER_CREATE_PATH) else {
            return;
        };
        if let Some(op) = item.post.as_mut() {
            let mut body = RequestBody::new();
            body.content.insert(
                "application/json".into(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ProviderCreate")))
                    .build(),
            );
            body.required = Some(Required::True);
            op.request_body = Some(body);
        }
    }
}
