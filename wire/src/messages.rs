//! OpenAI chat messages for the translators: reading content parts and data URLs,
//! merging consecutive messages of one role (both Anthropic and Gemini want turns to
//! alternate), and starting a chat request converted from another door.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::lenient::{self, Leaf, Lenient, List, Raw};
use crate::{unsupported, Unsupported};

/// An OpenAI chat request as the translators read it (typed, lenient: a field of the
/// wrong type reads as missing, as `Value` accessors read it). Everything else in the
/// request is for OpenAI-format providers only.
#[derive(Default, Deserialize)]
pub struct ChatRequest<'a> {
    #[serde(default, borrow)]
    pub messages: List<ChatMessage<'a>>,
    #[serde(default, borrow)]
    pub n: Leaf<'a>,
    #[serde(default, borrow)]
    pub logprobs: Leaf<'a>,
    #[serde(default, borrow)]
    pub temperature: Raw<'a>,
    #[serde(default, borrow)]
    pub top_p: Raw<'a>,
    #[serde(default, borrow)]
    max_completion_tokens: Raw<'a>,
    #[serde(default, borrow)]
    max_tokens: Raw<'a>,
    #[serde(default, borrow)]
    stop: Raw<'a>,
    #[serde(default, borrow)]
    pub tools: List<Tool<'a>>,
    #[serde(default, borrow)]
    pub tool_choice: Raw<'a>,
    #[serde(default, borrow)]
    pub response_format: Lenient<Typed<'a>>,
    /// OpenAI's cache hint: a key for requests that share a prefix.
    #[serde(default, borrow)]
    pub prompt_cache_key: Leaf<'a>,
}

#[derive(Default, Deserialize)]
pub struct ChatMessage<'a> {
    #[serde(default, borrow)]
    pub role: Leaf<'a>,
    #[serde(default, borrow)]
    pub content: Raw<'a>,
    #[serde(default, borrow)]
    pub tool_calls: List<ToolCall<'a>>,
    #[serde(default, borrow)]
    pub tool_call_id: Raw<'a>,
}

#[derive(Default, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(default, borrow)]
    pub id: Raw<'a>,
    #[serde(default, borrow)]
    pub function: Lenient<Function<'a>>,
}

/// A tool call's or a tool's `function`.
#[derive(Default, Deserialize)]
pub struct Function<'a> {
    #[serde(default, borrow)]
    pub name: Raw<'a>,
    #[serde(default, borrow)]
    pub arguments: Leaf<'a>,
    #[serde(default, borrow)]
    pub description: Raw<'a>,
    #[serde(default, borrow)]
    pub parameters: Raw<'a>,
}

#[derive(Default, Deserialize)]
pub struct Tool<'a> {
    #[serde(default, borrow)]
    pub function: Lenient<Function<'a>>,
}

/// An object read for its `type` alone.
#[derive(Default, Deserialize)]
pub struct Typed<'a> {
    #[serde(default, rename = "type", borrow)]
    pub kind: Leaf<'a>,
}

/// A named function in a `tool_choice` object.
#[derive(Default, Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    function: Lenient<Named<'a>>,
}

#[derive(Default, Deserialize)]
struct Named<'a> {
    #[serde(default, borrow)]
    name: Raw<'a>,
}

/// `tool_choice`, as the translators map it.
pub enum ToolChoice {
    /// `"auto"`, `"none"`, `"required"` (or another string).
    Mode(String),
    /// An object: the `name` of its `function`, when it has one.
    Function(Option<Value>),
    /// Anything else.
    Other,
}

impl<'a> ChatRequest<'a> {
    /// Reads a request's bytes; a body that is JSON but not an object reads as empty.
    pub fn read(raw: &'a [u8]) -> Result<Self, Unsupported> {
        lenient::document(raw).ok_or_else(|| unsupported("the request is not JSON"))
    }

    /// Refuses a request for more than one choice, naming the provider kind.
    pub fn refuse_choices(&self, provider: &str) -> Result<(), Unsupported> {
        if self.n.as_u64().is_some_and(|n| n > 1) {
            return Err(unsupported(format!(
                "`n` greater than 1 is not supported by {provider} providers"
            )));
        }
        Ok(())
    }

    /// The messages (an element that is not an object reads as an empty message).
    pub fn messages(&self) -> Result<impl Iterator<Item = &ChatMessage<'a>>, Unsupported> {
        let list = self
            .messages
            .get()
            .ok_or_else(|| unsupported("`messages` must be an array"))?;
        Ok(list.iter().map(|m| m.get().unwrap_or(&NO_MESSAGE)))
    }

    /// The completion cap: `max_completion_tokens` when given (whatever it holds),
    /// else `max_tokens`.
    pub fn max_tokens(&self) -> Option<Value> {
        if self.max_completion_tokens.is_present() {
            self.max_completion_tokens.to_value()
        } else {
            self.max_tokens.to_value()
        }
    }

    /// A sampling parameter, when it is a number.
    pub fn number(raw: &Raw<'_>) -> Option<Value> {
        raw.to_value().filter(Value::is_number)
    }

    /// `stop` as a list of sequences: one string, or a non-empty array as it is.
    pub fn stop_sequences(&self) -> Option<Value> {
        match self.stop.to_value()? {
            Value::String(s) => Some(Value::Array(vec![Value::String(s)])),
            Value::Array(a) if !a.is_empty() => Some(Value::Array(a)),
            _ => None,
        }
    }

    /// The `function` of each tool that has one (whatever its shape), when `tools` is an
    /// array.
    pub fn functions(&self) -> Option<impl Iterator<Item = &Function<'a>>> {
        let tools = self.tools.get()?;
        Some(tools.iter().filter_map(|t| {
            let f = &t.get()?.function;
            f.present.then(|| f.get().unwrap_or(&NO_FUNCTION))
        }))
    }

    /// `tool_choice`, when given.
    pub fn tool_choice(&self) -> Option<ToolChoice> {
        let raw = self.tool_choice.0?.get();
        Some(match raw.as_bytes().first() {
            Some(b'"') => lenient::parse::<Leaf>(raw)
                .and_then(Leaf::into_string)
                .map_or(ToolChoice::Other, ToolChoice::Mode),
            Some(b'{') => ToolChoice::Function(
                lenient::parse::<Choice>(raw)
                    .and_then(|c| c.function.into_inner())
                    .and_then(|f| f.name.to_value()),
            ),
            _ => ToolChoice::Other,
        })
    }
}

static NO_MESSAGE: ChatMessage<'static> = ChatMessage {
    role: Leaf::Absent,
    content: Raw(None),
    tool_calls: List::absent(),
    tool_call_id: Raw(None),
};

static NO_FUNCTION: Function<'static> = Function::absent();

impl<'a> ChatMessage<'a> {
    pub fn role(&self) -> &str {
        self.role.as_str().unwrap_or("")
    }

    /// The message's content, read by its shape.
    pub fn content(&self) -> Content<'_> {
        let Some(raw) = self.content.0 else {
            return Content::Missing;
        };
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => lenient::parse::<Leaf>(text)
                .and_then(|l| l.into_string())
                .map_or(Content::Other, Content::Text),
            Some(b'[') => lenient::parse(text).map_or(Content::Other, Content::Parts),
            Some(b'n') => Content::Null,
            _ => Content::Other,
        }
    }

    /// The text of its content (a string, or the text of its parts).
    pub fn text(&self) -> String {
        self.content().text()
    }

    /// Its tool calls (a call that is not an object reads as empty).
    pub fn tool_calls(&self) -> impl Iterator<Item = (&ToolCall<'a>, &Function<'a>)> {
        static NO_CALL: ToolCall<'static> = ToolCall {
            id: Raw(None),
            function: Lenient::absent(),
        };
        self.tool_calls.get().into_iter().flatten().map(|c| {
            let call = c.get().unwrap_or(&NO_CALL);
            (call, call.function.get().unwrap_or(&NO_FUNCTION))
        })
    }
}

impl Function<'_> {
    /// A missing `function`.
    pub const fn absent() -> Self {
        Function {
            name: Raw(None),
            arguments: Leaf::Absent,
            description: Raw(None),
            parameters: Raw(None),
        }
    }

    /// The call's arguments as a JSON object (none or blank: `{}`).
    pub fn arguments(&self) -> Result<Value, Unsupported> {
        let args = self.arguments.as_str().unwrap_or("{}");
        if args.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(args)
            .map_err(|_| unsupported("tool call arguments must be a JSON object"))
    }
}

/// A message's `content` by its shape.
pub enum Content<'a> {
    Missing,
    Null,
    Text(String),
    Parts(Vec<Lenient<ContentPart<'a>>>),
    Other,
}

#[derive(Default, Deserialize)]
pub struct ContentPart<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    text: Leaf<'a>,
    #[serde(default, borrow)]
    image_url: Raw<'a>,
}

#[derive(Default, Deserialize)]
struct ImageUrl<'a> {
    #[serde(default, borrow)]
    url: Leaf<'a>,
}

/// One part of a message's content that a translator can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    /// An image by URL: `https://…` or a `data:<mime>;base64,…` URL.
    Image(String),
}

impl Content<'_> {
    /// The text of a string content, or of its parts' `text`.
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get().and_then(|p| p.text.as_str()))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    }

    /// The parts of the content (a string or an array of typed parts); anything but text
    /// and images is refused, naming the provider kind.
    pub fn parts(&self, provider: &str) -> Result<Vec<Part<'_>>, Unsupported> {
        match self {
            Content::Missing | Content::Null => Ok(Vec::new()),
            Content::Text(s) => Ok(vec![Part::Text(s)]),
            Content::Parts(items) => items
                .iter()
                .map(|p| {
                    let p = p.get();
                    match p.and_then(|p| p.kind.as_str()) {
                        Some("text") => {
                            Ok(Part::Text(p.and_then(|p| p.text.as_str()).unwrap_or("")))
                        }
                        Some("image_url") => p
                            .and_then(|p| image_url(&p.image_url))
                            .map(Part::Image)
                            .ok_or_else(|| unsupported("image_url needs a url")),
                        Some("input_audio") => Err(unsupported(format!(
                            "audio input is not supported for {provider} providers"
                        ))),
                        Some(other) => Err(unsupported(format!(
                            "content part `{other}` is not supported by {provider} providers"
                        ))),
                        None => Err(unsupported("content parts need a type")),
                    }
                })
                .collect(),
            Content::Other => Err(unsupported(
                "message content must be a string or an array of parts",
            )),
        }
    }
}

/// An `image_url` part's URL: the `url` of an object that has one, or the field itself
/// when it is a string.
fn image_url(raw: &Raw<'_>) -> Option<String> {
    let text = raw.0?.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let image: ImageUrl = lenient::parse(text)?;
            if image.url.is_present() {
                image.url.into_string()
            } else {
                None
            }
        }
        _ => lenient::parse::<Leaf>(text)?.into_string(),
    }
}

/// The text of an OpenAI message `content` (a string or text parts), from the tree.
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
/// converted `messages`, and the fields that only change name (`(to, field)` pairs, each
/// copied unless missing or null).
pub fn chat_request<const N: usize>(
    model: Value,
    messages: Vec<Value>,
    renamed: [(&str, &Raw<'_>); N],
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    out.insert("model".into(), model);
    out.insert("messages".into(), Value::Array(messages));
    for (to, field) in renamed {
        if let Some(v) = field.to_value().filter(|v| !v.is_null()) {
            out.insert(to.into(), v);
        }
    }
    out
}
