//! Translation between a client API and a backend of another wire, above
//! both seams: streams event by event (`stream`), whole responses and
//! provider errors (`response`). The codecs themselves live in each dialect's
//! folder; this module only wires a backend's decoder to a client API's
//! encoder.

pub mod response;
pub mod stream;
