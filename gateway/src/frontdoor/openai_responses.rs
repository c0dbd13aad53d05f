//! The OpenAI Responses API as a front door. A request (with the conversation of its
//! `previous_response_id`, when stored) is converted to the OpenAI chat shape and its
//! answer back by the mappers of `perpetuo_wire::openai::responses`; the door around the
//! pipeline is in [`door`], storage in [`store`] and its expiry in [`purge`].

pub mod door;
