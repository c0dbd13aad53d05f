//! Provider kinds, as the wire crate defines them (the adapters dispatch on them).

pub use perpetuo_wire::kind::{ProviderKind, UnknownKind};
