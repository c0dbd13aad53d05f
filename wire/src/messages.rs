//! OpenAI chat messages for the translators: reading content parts and data URLs,
//! merging consecutive messages of one role (both Anthropic and Gemini want turns to
//! alternate), and starting a chat request converted from another door.

use serde_json::{json, Value};

use super::Unsupported;

/// One part of a message's content that a translator can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    /// An image by URL: `https://…` or a `data:<mime>;base64,…` URL.
    Image(&'a str),
}

/// The parts of an OpenAI message `content` (a string or an array of typed parts);
/// anything but text and images is refused, naming the provider kind.
pub fn parts<'a>(content: Option<&'a Value>, provider: &str) -> Result<Vec<Part<'a>>, Unsupported> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s)]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(Part::Text(
                    p.get("text").and_then(Value::as_str).unwrap_or(""),
                )),
                Some("image_url") => p
                    .get("image_url")
                    .and_then(|i| i.get("url").or(Some(i)))
                    .and_then(Value::as_str)
                    .map(Part::Image)
                    .ok_or_else(|| Unsupported("image_url needs a url".into())),
                Some("input_audio") => Err(Unsupported(format!(
                    "audio input is not supported for {provider} providers"
                ))),
                Some(other) => Err(Unsupported(format!(
                    "content part `{other}` is not supported by {provider} providers"
                ))),
                None => Err(Unsupported("content parts need a type".into())),
            })
            .collect(),
        Some(_) => Err(Unsupported(
            "message content must be a string or an array of parts".into(),
        )),
    }
}

/// The text of an OpenAI message `content` (a string or text parts).
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// `data:` URL → (media type, base64 data).
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

/// Appends `items` to the last message when it has the same role, else starts a message
/// `{"role": role, field: items}`.
pub fn push_merged(messages: &mut Vec<Value>, role: &str, field: &str, mut items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut() {
        if last["role"] == role {
            if let Some(existing) = last[field].as_array_mut() {
                existing.append(&mut items);
                return;
            }
        }
    }
    messages.push(json!({"role": role, field: items}));
}

/// The start of a chat request translated from another door: the client's `model`, the
/// converted `messages`, and the fields that only change name (`(from, to)` pairs).
pub fn chat_request(
    request: &serde_json::Value,
    messages: Vec<serde_json::Value>,
    renamed: &[(&str, &str)],
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    out.insert(
        "model".into(),
        request.get("model").cloned().unwrap_or_default(),
    );
    out.insert("messages".into(), serde_json::Value::Array(messages));
    for (from, to) in renamed {
        if let Some(v) = request.get(*from).filter(|v| !v.is_null()) {
            out.insert((*to).into(), v.clone());
        }
    }
    out
}
