//! The Anthropic Messages API as a front door. To `anthropic` entries a request passes
//! through unchanged (full fidelity); to every other kind it is converted to the OpenAI
//! chat shape and its answer back, by the mappers of `perpetuo_wire::anthropic::messages`.
//! The door around the pipeline is in [`door`].

pub mod door;
