//! Test harness, one job per module: `env` (the seeded database and the test clock),
//! `processes` (the gateway binary, started and killed), `builders` (mocks, bodies, ready
//! setups), `relay` (the TCP fault relay) and `waits` (`eventually`, `outlast`). Tests
//! import from `harness` itself.

mod builders;
mod env;
pub mod otlp;
mod processes;
mod relay;
mod waits;

pub use builders::*;
pub use env::*;
pub use processes::*;
pub use relay::*;
pub use waits::*;
