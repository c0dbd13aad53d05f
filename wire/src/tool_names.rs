//! Tool names every provider kind takes. A client's tool may be named in a way another
//! provider refuses (a Responses `namespace` tool's functions, an Anthropic tool name past
//! 64 characters): [`ToolMap`] gives each tool a name valid everywhere — its own when it
//! is, readable and qualified when it fits, hashed otherwise — and maps a provider's call
//! back to the tool the client declared.

use crate::{unsupported, Unsupported};

/// Longest function name every provider kind takes (OpenAI and Gemini: 64; Anthropic: 128).
pub const MAX_NAME: usize = 64;

/// How a tool is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A function: JSON arguments.
    Function,
    /// A custom (freeform) tool: one string, carried as the function's `input` argument.
    Custom,
}

/// A tool as the client declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub namespace: Option<String>,
    pub name: String,
    pub kind: Kind,
}

/// The names the provider sees, and what each stands for.
#[derive(Debug, Clone, Default)]
pub struct ToolMap {
    /// (provider name, declared tool), in declaration order.
    entries: Vec<(String, Declared)>,
}

/// A call of the provider, as the item the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub kind: Kind,
}

impl ToolMap {
    /// The provider's name for a declared tool: its own name for a plain function or
    /// custom tool, a qualified name inside a namespace. Two tools never share a name: a
    /// qualified name taken already gets the hashed form.
    pub fn add(&mut self, tool: Declared) -> Result<&str, Unsupported> {
        if let Some(i) = self.entries.iter().position(|(_, d)| *d == tool) {
            return Ok(&self.entries[i].0);
        }
        let mut name = match &tool.namespace {
            None => tool.name.clone(),
            Some(ns) => qualify(ns, &tool.name),
        };
        if self.taken(&name) {
            name = hashed(
                tool.namespace.as_deref().unwrap_or(""),
                &tool.name,
                tool.kind,
            );
            if self.taken(&name) {
                return Err(unsupported(format!("two tools are named `{}`", tool.name)));
            }
        }
        self.entries.push((name, tool));
        Ok(&self.entries[self.entries.len() - 1].0)
    }

    /// The provider's name for a plain function whose own name may break another
    /// provider's rules (Anthropic's tool names run to 128 characters, OpenAI's and
    /// Gemini's to 64): its own name when valid everywhere, else the hashed form.
    pub fn add_renamed(&mut self, name: &str) -> String {
        let tool = Declared {
            namespace: None,
            name: name.to_string(),
            kind: Kind::Function,
        };
        if let Some((given, _)) = self.entries.iter().find(|(_, d)| *d == tool) {
            return given.clone();
        }
        let given = if valid(name) && !self.taken(name) {
            name.to_string()
        } else {
            hashed("", name, Kind::Function)
        };
        self.entries.push((given.clone(), tool));
        given
    }

    fn taken(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// The provider's name for a tool named in the conversation (a call of an earlier
    /// turn): the declared tool's, else the name it would get.
    pub fn provider_name(&self, namespace: Option<&str>, name: &str, kind: Kind) -> String {
        let declared = self
            .entries
            .iter()
            .find(|(_, d)| d.namespace.as_deref() == namespace && d.name == name && d.kind == kind);
        match (declared, namespace) {
            (Some((n, _)), _) => n.clone(),
            (None, Some(ns)) => qualify(ns, name),
            (None, None) => name.to_string(),
        }
    }

    /// What a name the provider called stands for (a name the client never declared is a
    /// plain function of that name).
    pub fn resolve<'a>(&'a self, provider_name: &'a str) -> Resolved<'a> {
        match self.entries.iter().find(|(n, _)| n == provider_name) {
            Some((_, d)) => Resolved {
                namespace: d.namespace.as_deref(),
                name: &d.name,
                kind: d.kind,
            },
            None => Resolved {
                namespace: None,
                name: provider_name,
                kind: Kind::Function,
            },
        }
    }

    /// The custom tool named `name` outside any namespace, by its provider name.
    pub fn custom(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, d)| d.namespace.is_none() && d.name == name && d.kind == Kind::Custom)
            .map(|(n, _)| n.as_str())
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether a name is inside every provider's rules: `^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$`
/// (Gemini wants a letter or underscore first).
pub fn valid(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(allowed)
}

/// A namespace's function as one name: `namespace__name` when that is a valid name, else
/// the hashed form.
pub fn qualify(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}__{name}");
    if valid(&plain) {
        plain
    } else {
        hashed(namespace, name, Kind::Function)
    }
}

/// A valid name for any tool: its readable part (disallowed characters as `_`, cut to
/// fit) and a hash of the exact namespace, name and kind.
fn hashed(namespace: &str, name: &str, kind: Kind) -> String {
    // FNV-1a: stable, so one request's declared tools and earlier calls agree.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let kind_byte = match kind {
        Kind::Function => b'f',
        Kind::Custom => b'c',
    };
    for b in namespace
        .bytes()
        .chain([0, kind_byte, 0])
        .chain(name.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let suffix = format!("_{h:016x}");
    let mut readable: String = format!("{namespace}__{name}")
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(MAX_NAME - suffix.len())
        .collect();
    if !readable
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    {
        readable.insert(0, '_');
        readable.truncate(MAX_NAME - suffix.len());
    }
    readable + &suffix
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn declared(ns: Option<&str>, name: &str, kind: Kind) -> Declared {
        Declared {
            namespace: ns.map(str::to_string),
            name: name.to_string(),
            kind,
        }
    }

    #[test]
    fn readable_names_when_they_fit() {
        assert_eq!(qualify("crm", "get_user"), "crm__get_user");
        let long = qualify(&"n".repeat(40), &"f".repeat(40));
        assert!(valid(&long) && long.len() == MAX_NAME, "{long}");
        let odd = qualify("my.server", "do thing/now");
        assert!(
            valid(&odd) && odd.starts_with("my_server__do_thing_now_"),
            "{odd}"
        );
        let digit = qualify("1st", "f");
        assert!(valid(&digit), "{digit}");
    }

    #[test]
    fn a_qualified_name_already_taken_gets_the_hashed_form() {
        let mut map = ToolMap::default();
        let plain = map
            .add(declared(None, "a__b", Kind::Function))
            .unwrap()
            .to_string();
        let ns = map
            .add(declared(Some("a"), "b", Kind::Function))
            .unwrap()
            .to_string();
        assert_eq!(plain, "a__b");
        assert_ne!(ns, plain);
        assert_eq!(map.resolve(&ns).namespace, Some("a"));
        assert_eq!(map.resolve("a__b").namespace, None);
        assert_eq!(map.provider_name(Some("a"), "b", Kind::Function), ns);
        // The same tool twice keeps one name.
        assert_eq!(
            map.add(declared(Some("a"), "b", Kind::Function)).unwrap(),
            ns
        );
    }

    fn any_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_-]{1,40}",
            any::<String>(),
            "[a-z_.:/ -]{0,80}",
            "(_|-|a){1,70}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn every_declared_tool_gets_a_valid_distinct_name_that_maps_back(
            tools in proptest::collection::vec(
                (proptest::option::of(any_name()), any_name(), any::<bool>()), 1..12)
        ) {
            let mut map = ToolMap::default();
            let mut names: Vec<(String, Declared)> = Vec::new();
            for (ns, name, custom) in tools {
                // Plain names are the client's own (the Responses API holds them to
                // OpenAI's rules already); only qualified ones are ours to make valid.
                if ns.is_none() && !valid(&name) {
                    continue;
                }
                let kind = if custom { Kind::Custom } else { Kind::Function };
                let d = Declared { namespace: ns, name, kind };
                let given = map.add(d.clone()).unwrap().to_string();
                prop_assert!(valid(&given), "{given:?}");
                names.push((given, d));
            }
            for (given, d) in &names {
                let r = map.resolve(given);
                prop_assert_eq!(r.namespace, d.namespace.as_deref());
                prop_assert_eq!(r.name, d.name.as_str());
                prop_assert_eq!(r.kind, d.kind);
                prop_assert_eq!(&map.provider_name(d.namespace.as_deref(), &d.name, d.kind), given);
            }
            for (i, (a, da)) in names.iter().enumerate() {
                for (b, db) in &names[i + 1..] {
                    prop_assert!(a != b || da == db, "{a} names two tools");
                }
            }
        }

        #[test]
        fn any_plain_name_can_be_renamed_and_maps_back(names in proptest::collection::vec(any_name(), 1..12)) {
            let mut map = ToolMap::default();
            let given: Vec<String> = names.iter().map(|n| map.add_renamed(n)).collect();
            for (name, given) in names.iter().zip(&given) {
                prop_assert!(valid(given), "{given:?}");
                prop_assert_eq!(map.resolve(given).name, name.as_str());
                prop_assert_eq!(&map.provider_name(None, name, Kind::Function), given);
                if valid(name) {
                    prop_assert_eq!(given, name);
                }
            }
        }

    }
}
