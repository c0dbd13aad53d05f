//! Responses tools for providers that take only function tools. A `namespace` tool's
//! functions become plain functions with qualified names (see [`crate::tool_names`]), a
//! `custom` (freeform) tool a function taking one string, and OpenAI's built-in tools are
//! dropped (noted) or refused by [`builtin`]. A call comes back as the item the client
//! declared: a `function_call` with its `namespace`, or a `custom_tool_call` with its
//! `input`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::lenient::{Leaf, Lenient, List, Raw};
use crate::tool_names::{Declared, Kind, ToolMap};
use crate::{unsupported, Unsupported};

/// The one argument a custom tool's function takes.
pub const CUSTOM_INPUT: &str = "input";

/// What OpenAI's built-in tools become for a provider that does not run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Left out, and the log row's note says so: an agent works without it (the model
    /// just cannot search the web, run hosted code, …).
    Dropped(&'static str),
    /// Refused: the tool is the agent's loop (its calls are items the client runs), so
    /// the agent cannot work without it.
    Refused,
}

/// What happens to a built-in tool `kind` (`None` for a type that is not a built-in).
pub fn builtin(kind: &str) -> Option<Builtin> {
    let dropped = match kind {
        "web_search" | "web_search_2025_08_26" => "web_search tool",
        "web_search_preview" | "web_search_preview_2025_03_11" => "web_search_preview tool",
        "file_search" => "file_search tool",
        "code_interpreter" => "code_interpreter tool",
        "image_generation" => "image_generation tool",
        "mcp" => "mcp tool",
        "tool_search" => "tool_search tool",
        "programmatic_tool_calling" => "programmatic_tool_calling tool",
        "computer" | "computer_use_preview" | "local_shell" | "shell" | "apply_patch" => {
            return Some(Builtin::Refused)
        }
        _ => return None,
    };
    Some(Builtin::Dropped(dropped))
}

/// A tool of a Responses request (or one inside a namespace).
#[derive(Default, Deserialize)]
pub(crate) struct ToolIn<'a> {
    #[serde(default, rename = "type", borrow)]
    pub kind: Leaf<'a>,
    #[serde(default, borrow)]
    pub name: Leaf<'a>,
    #[serde(default, borrow)]
    pub description: Leaf<'a>,
    #[serde(default, borrow)]
    pub parameters: Raw<'a>,
    #[serde(default, borrow)]
    pub format: Lenient<FormatIn<'a>>,
    #[serde(default, borrow)]
    pub tools: List<ToolIn<'a>>,
}

/// A custom tool's input format.
#[derive(Default, Deserialize)]
pub(crate) struct FormatIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    syntax: Leaf<'a>,
    #[serde(default, borrow)]
    definition: Leaf<'a>,
}

/// The request's tools as chat function tools, the map of their names, the built-in
/// tools left out, and why the tools cannot be offered at all (the map is whole anyway:
/// the conversation's calls are named by it).
pub(crate) struct Converted {
    pub functions: Vec<Value>,
    pub map: ToolMap,
    pub dropped: Vec<&'static str>,
    pub refused: Option<Unsupported>,
}

/// Converts the request's `tools` (each one that is not an object reads as empty).
pub(crate) fn convert(tools: &[Lenient<ToolIn<'_>>]) -> Converted {
    let mut out = Converted {
        functions: Vec::new(),
        map: ToolMap::default(),
        dropped: Vec::new(),
        refused: None,
    };
    for tool in tools {
        if let Err(e) = convert_one(tool.get().unwrap_or(&ToolIn::default()), &mut out) {
            out.refused.get_or_insert(e);
        }
    }
    out
}

fn convert_one(tool: &ToolIn<'_>, out: &mut Converted) -> Result<(), Unsupported> {
    let none = ToolIn::default();
    match tool.kind.as_str() {
        Some("namespace") => {
            let ns = tool
                .name
                .as_str()
                .ok_or_else(|| unsupported("a `namespace` tool needs a `name`"))?;
            for inner in tool.tools.get().into_iter().flatten() {
                let inner = inner.get().unwrap_or(&none);
                match inner.kind.as_str() {
                    Some("function") | Some("custom") => {
                        out.functions.push(function(&mut out.map, Some(ns), inner)?)
                    }
                    other => {
                        return Err(unsupported(format!(
                            "tools of type `{}` inside a namespace are not supported",
                            other.unwrap_or("(none)")
                        )))
                    }
                }
            }
        }
        Some("function") | Some("custom") => {
            out.functions.push(function(&mut out.map, None, tool)?)
        }
        Some(kind) => match builtin(kind) {
            Some(Builtin::Dropped(name)) => {
                if !out.dropped.contains(&name) {
                    out.dropped.push(name);
                }
            }
            Some(Builtin::Refused) => {
                return Err(unsupported(format!(
                    "the built-in tool `{kind}` is only available on openai providers"
                )))
            }
            None => return Err(unsupported(format!("unknown tool type `{kind}`"))),
        },
        None => return Err(unsupported("every tool needs a `type`")),
    }
    Ok(())
}

/// One function or custom tool as a chat function tool, its name in `map`.
fn function(
    map: &mut ToolMap,
    namespace: Option<&str>,
    tool: &ToolIn<'_>,
) -> Result<Value, Unsupported> {
    let name = tool
        .name
        .as_str()
        .ok_or_else(|| unsupported("every function and custom tool needs a `name`"))?;
    let kind = if tool.kind.as_str() == Some("custom") {
        Kind::Custom
    } else {
        Kind::Function
    };
    let declared = Declared {
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        kind,
    };
    let provider_name = map.add(declared)?.to_string();
    let mut description = tool.description.as_str().unwrap_or("").to_string();
    let parameters = match kind {
        Kind::Function => tool
            .parameters
            .to_value()
            .filter(|p| !p.is_null())
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        Kind::Custom => {
            if let Some(grammar) = tool
                .format
                .get()
                .filter(|f| f.kind.as_str() == Some("grammar"))
            {
                let syntax = grammar.syntax.as_str().unwrap_or("lark");
                let definition = grammar.definition.as_str().unwrap_or("");
                if !description.is_empty() {
                    description.push_str("\n\n");
                }
                description.push_str(&format!(
                    "The `{CUSTOM_INPUT}` argument must follow this {syntax} grammar:\n{definition}"
                ));
            }
            json!({
                "type": "object",
                "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's input, as free-form text."}},
                "required": [CUSTOM_INPUT],
                "additionalProperties": false,
            })
        }
    };
    if let Some(ns) = namespace {
        description = format!("[{ns}] {description}");
    }
    Ok(json!({
        "type": "function",
        "function": {"name": provider_name, "description": description, "parameters": parameters},
    }))
}

/// A custom tool call's input from the function arguments the provider sent: the string
/// `input` argument, or the arguments themselves when the model wrote no such object.
pub fn custom_input(arguments: &str) -> String {
    #[derive(Deserialize)]
    struct Args {
        input: String,
    }
    serde_json::from_str::<Args>(arguments).map_or_else(|_| arguments.to_string(), |a| a.input)
}

/// A custom tool call's input as the function arguments the provider reads.
pub fn custom_arguments(input: &str) -> String {
    json!({CUSTOM_INPUT: input}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn custom_tools_take_one_string() {
        assert_eq!(
            custom_input(&custom_arguments("*** Begin Patch\n\"x\"")),
            "*** Begin Patch\n\"x\""
        );
        assert_eq!(custom_input("not json"), "not json");
    }

    proptest! {
        #[test]
        fn a_custom_input_survives_the_function_arguments(input in any::<String>()) {
            prop_assert_eq!(custom_input(&custom_arguments(&input)), input);
        }
    }
}
