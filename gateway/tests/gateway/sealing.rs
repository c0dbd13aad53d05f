//! Provider keys sealed under the older associated-data format still open, keep opening
//! after the admin API re-seals them, and a row moved behind the API's back does not.

use std::time::Duration;

use perpetuo_core::crypto::{AAD_BOUND, AAD_ENTRY_ID};
use perpetuo_core::db;

use crate::harness::{chat_body, eventually, mock, Env, Gateway};

#[tokio::test]
async fn old_format_rows_open_before_and_after_the_reseal() {
    let env = Env::new().await;
    let a = mock().await;
    let id = env.add_provider("legacy", &a.base_url(), 1).await;
    // Rewrite the entry's key as the first format sealed it: associated data = entry id
    // only.
    let client = env.client().await;
    let row = db::providers::get(&client, env.workspace, id)
        .await
        .unwrap()
        .unwrap();
    let old = env
        .master
        .seal_as("sk-upstream-legacy", &row.binding(), AAD_ENTRY_ID)
        .unwrap();
    client
        .execute(
            "UPDATE provider_entry_keys SET sealed_key = $2, key_nonce = $3, aad_version = $4
             WHERE entry_id = $1",
            &[&id, &old.ciphertext, &old.nonce, &old.aad_version],
        )
        .await
        .unwrap();

    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "an old-format row opens");
    assert_eq!(resp.headers()["x-perpetuo-provider"], "legacy");

    let mut conn = env.client().await;
    assert_eq!(
        db::entry_keys::reseal_old_formats(&mut conn, &env.master)
            .await
            .unwrap(),
        1
    );
    let keys = db::entry_keys::list_for_entry(&client, env.workspace, id)
        .await
        .unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| k.sealed.aad_version)
            .collect::<Vec<_>>(),
        [AAD_BOUND]
    );
    // A gateway that reads the re-sealed row afresh opens it.
    drop(gw);
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a re-sealed row opens");

    // Pointing the row elsewhere in the database (same server, another spelling of the
    // base URL) breaks the binding: the gateway skips the entry instead of sending the key.
    client
        .execute(
            "UPDATE provider_keys SET base_url = base_url || '/' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    eventually("moved entry refused", Duration::from_secs(10), || async {
        let resp = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        resp.status() != 200
    })
    .await;
}
