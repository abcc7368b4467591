//! The OpenAI Responses API (`POST /v1/responses`): its wire types and
//! codecs, the client API (`api`) and the backend (`backend`, kind
//! `openai-responses`) built on them. A sibling of Chat Completions in the
//! OpenAI folder: they share OpenAI's error shape.

pub mod api;
pub mod backend;
pub mod request;
pub mod response;
pub mod stream;
pub mod types;

/// The request wire of the Responses API.
pub const WIRE: crate::backend::Wire = "openai.responses";
