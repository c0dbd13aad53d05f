//! Ready-made pieces of a test: a mock provider, a chat body, a workspace whose gateway
//! reaches the database through a fault relay.

use mock_provider::{MockConfig, MockProvider};
use serde_json::{json, Value};

use super::{db_addr, relay_url, Env, Gateway, Relay};

pub async fn mock() -> MockProvider {
    MockProvider::start(MockConfig::default()).await.unwrap()
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello to the test suite"}]})
}

/// A workspace with one provider entry (`main`, the mock) and a gateway that reaches the
/// database through a [`Relay`] the test can delay, blackhole or stop.
pub struct BehindRelay {
    pub env: Env,
    pub mock: MockProvider,
    pub relay: Relay,
    pub gw: Gateway,
}

/// Starts a [`BehindRelay`], the gateway with `extra` settings.
pub async fn behind_relay(extra: &[(&str, &str)]) -> BehindRelay {
    let env = Env::new().await;
    let mock = mock().await;
    env.add_provider("main", &mock.base_url(), 1).await;
    let relay = Relay::start(db_addr(&env.db.url)).await;
    let gw = Gateway::start_with(&env, &relay_url(&env.db.url, relay.addr), extra).await;
    BehindRelay {
        env,
        mock,
        relay,
        gw,
    }
}
