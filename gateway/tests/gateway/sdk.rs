//! The official `openai` and `anthropic` Python SDKs against the gateway (interpreter
//! from `PERPETUO_PYTHON`, else `python3`; `scripts/test` provides one with both installed).

use std::process::Command;

use perpetuo_core::provider::ProviderKind;

use mock_provider::MockProvider;

use crate::harness::{mock, Env, Gateway};

/// Entries of every kind on mocks: `first` and `second` (OpenAI) share the OpenAI
/// models and `error-429`; `claude` and `gem` serve one model each.
async fn setup() -> (Env, Gateway, MockProvider, MockProvider) {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    let k = ProviderKind::Openai;
    env.add_provider_with(
        "first",
        k,
        &a.base_url(),
        1,
        &["gpt-4o-mini", "text-embedding-3-small", "error-429"],
        &[],
    )
    .await;
    env.add_provider_with(
        "second",
        k,
        &b.base_url(),
        2,
        &["gpt-4o-mini", "error-429"],
        &[],
    )
    .await;
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &a.anthropic_base_url(),
        3,
        &["claude-sonnet-4-5"],
        &[],
    )
    .await;
    env.add_provider_with(
        "gem",
        ProviderKind::Gemini,
        &a.gemini_base_url(),
        4,
        &["gemini-2.5-flash"],
        &[],
    )
    .await;
    let gw = Gateway::start(&env).await;
    (env, gw, a, b)
}

/// Runs one SDK check script against the gateway; returns its output.
async fn run_script(env: &Env, gw: &Gateway, script: &'static str, sdk: &str) -> String {
    let python = std::env::var("PERPETUO_PYTHON").unwrap_or_else(|_| "python3".into());
    let base = gw.base.clone();
    let key = env.key.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("GATEWAY_URL", base)
            .env("GOOD_KEY", key)
            .env("BAD_KEY", format!("pp-{}", "B".repeat(43)))
            .env("MODELS", "gpt-4o-mini,claude-sonnet-4-5,gemini-2.5-flash")
            .env("PASSTHROUGH_MODELS", "gpt-4o-mini")
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{sdk} SDK checks failed (is the `{sdk}` package installed for this interpreter?):\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn openai_python_sdk() {
    let (env, gw, _a, _b) = setup().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_check.py");
    let stdout = run_script(&env, &gw, script, "openai").await;
    assert!(stdout.contains("12 passed, 0 failed"), "{stdout}");
}

#[tokio::test]
async fn anthropic_python_sdk() {
    let (env, gw, _a, _b) = setup().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/anthropic_sdk_check.py"
    );
    let stdout = run_script(&env, &gw, script, "anthropic").await;
    assert!(stdout.contains("13 passed, 0 failed"), "{stdout}");
}

#[tokio::test]
async fn openai_python_sdk_responses() {
    let (env, gw, _a, _b) = setup().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/openai_responses_check.py"
    );
    let stdout = run_script(&env, &gw, script, "openai").await;
    assert!(stdout.contains("11 passed, 0 failed"), "{stdout}");
}

#[tokio::test]
async fn openai_python_sdk_sees_rate_limits() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "first",
        ProviderKind::Openai,
        &m.base_url(),
        1,
        &["gpt-4o-mini"],
        &[],
    )
    .await;
    env.client()
        .await
        .execute(
            "UPDATE api_keys SET rpm_limit = 2 WHERE id = $1",
            &[&env.key_id],
        )
        .await
        .unwrap();
    let gw = Gateway::start(&env).await;
    // The three requests must fall in one calendar minute.
    env.clock.fresh_minute();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/openai_limits_check.py"
    );
    let stdout = run_script(&env, &gw, script, "openai").await;
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
}

#[tokio::test]
async fn the_sdks_get_the_same_answer_from_a_cache_hit_as_from_the_provider() {
    let (env, gw, _a, _b) = setup().await;
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET cache_mode = 'on' WHERE id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/cache_check.py");
    let stdout = eventually_cached(&env, &gw, script).await;
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
}

/// Runs the cache script once the workspace's cache setting reached the gateway.
async fn eventually_cached(env: &Env, gw: &Gateway, script: &'static str) -> String {
    crate::harness::eventually(
        "the cache setting reaches the gateway",
        std::time::Duration::from_secs(10),
        || async {
            let r = gw
                .chat(&env.key, crate::harness::chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
            r.headers().contains_key("x-perpetuo-cache")
        },
    )
    .await;
    run_script(env, gw, script, "openai and anthropic").await
}
