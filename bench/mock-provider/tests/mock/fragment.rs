//! Fragment mode: same bytes, awkward boundaries.

use std::time::Duration;

use mock_provider::MockConfig;

use crate::support::{
    chunks, data_payloads, frames, joined, post, start_with, stream_body, streamed_text,
};

const CONTENT: &str = "Grüße aus dem Mock — 你好, ✓ done";

fn config(fragment: bool) -> MockConfig {
    MockConfig {
        chunk_delay: Duration::from_millis(1),
        fragment,
        content: CONTENT.to_owned(),
        created: Some(1_700_000_000),
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn fragmented_stream_rejoins_to_the_unfragmented_bytes() {
    let plain = start_with(config(false)).await;
    let fragmented = start_with(config(true)).await;
    let body = stream_body("gpt-4o", true);

    let (plain_frames, error) = frames(post(&plain, "/chat/completions", &body).await).await;
    assert!(error.is_none());
    let (fragmented_frames, error) =
        frames(post(&fragmented, "/chat/completions", &body).await).await;
    assert!(error.is_none());

    let plain_bytes = joined(&plain_frames);
    assert_eq!(
        joined(&fragmented_frames),
        plain_bytes,
        "byte-identical once re-joined"
    );

    let text = String::from_utf8(plain_bytes).unwrap();
    assert_eq!(streamed_text(&chunks(&data_payloads(&text))), CONTENT);
    assert!(text.ends_with("data: [DONE]\n\n"));

    // Unfragmented: one event per frame.
    assert!(plain_frames
        .iter()
        .all(|f| f.ends_with(b"\n\n") && f.starts_with(b"data: ")));
    // Fragmented: more frames, some cut inside an event or a UTF-8 character, and
    // some carrying several events.
    assert!(fragmented_frames.len() > plain_frames.len());
    assert!(fragmented_frames
        .iter()
        .any(|f| std::str::from_utf8(f).is_err()));
    assert!(fragmented_frames.iter().any(|f| f.ends_with(b"da")));
    assert!(fragmented_frames
        .iter()
        .any(|f| f.windows(2).filter(|w| w == b"\n\n").count() >= 2));
    assert!(
        fragmented
            .wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await
    );
}

#[tokio::test]
async fn fragmented_drop_mid_stream_still_delivers_what_came_before_the_cut() {
    let fragmented = start_with(config(true)).await;
    let (frames, error) = frames(
        post(
            &fragmented,
            "/chat/completions",
            &stream_body("drop-mid-stream", false),
        )
        .await,
    )
    .await;
    assert!(error.is_some());
    let text = String::from_utf8(joined(&frames)).unwrap();
    let chunks = chunks(&data_payloads(&text));
    assert_eq!(chunks.len(), 3);
    assert!(!text.contains("[DONE]"));
}
