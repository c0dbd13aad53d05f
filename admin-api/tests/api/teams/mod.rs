//! Teams, by behaviour: the access table on every route (`access`), members and roles
//! (`roles`), members and workspaces that go and the gateways hearing of it (`departures`),
//! email — invitations, verification, password reset (`email`) — and the audit log
//! (`audit`). What they share lives here.

mod access;
mod audit;
mod departures;
mod email;
mod roles;

use perpetuo_core::db::workspaces::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Account, SmtpSink, TestApp};

/// Adds `user` to `workspace` with `role`, straight in the database.
async fn add(app: &TestApp, workspace: &str, user: &str, role: Role) {
    let client = app.client().await;
    perpetuo_core::db::workspaces::add_member(
        &client,
        workspace.parse().unwrap(),
        user.parse().unwrap(),
        role,
    )
    .await
    .unwrap();
}

async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    app.raw(
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// A team: an owner and one user of each other role in the owner's default workspace.
struct Team {
    owner: Account,
    admin: Account,
    member: Account,
    viewer: Account,
}

impl Team {
    async fn new(app: &TestApp) -> Self {
        let owner = app.signup("owner@example.com").await;
        let admin = app.signup("admin@example.com").await;
        let member = app.signup("member@example.com").await;
        let viewer = app.signup("viewer@example.com").await;
        add(app, &owner.workspace, &admin.user_id, Role::Admin).await;
        add(app, &owner.workspace, &member.user_id, Role::Member).await;
        add(app, &owner.workspace, &viewer.user_id, Role::Viewer).await;
        Self {
            owner,
            admin,
            member,
            viewer,
        }
    }

    fn ws(&self) -> &str {
        &self.owner.workspace
    }
}

/// An app that sends email through `smtp`.
async fn app_with_mail(smtp: &SmtpSink) -> TestApp {
    let url = smtp.url();
    TestApp::spawn_configured(|c| {
        c.teams.smtp_url = Some(perpetuo_core::Secret::new(url));
        c.teams.mail_from = "Perpetuo <noreply@perpetuo.test>".into();
        c.teams.admin_public_url = Some("http://dashboard.test".into());
        c.teams.verification_resend_cooldown_seconds = 3600;
    })
    .await
}

async fn verify(app: &TestApp, smtp: &SmtpSink, email: &str, n: usize) {
    let mail = smtp.wait_for(email, n).await;
    let token = mail.token("#/verify-email");
    let (status, b) = app
        .raw(
            Method::POST,
            "/auth/verify-email",
            None,
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
}
