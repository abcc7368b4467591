//! Whole (non-stream) answers between a backend and a client API of another
//! wire: the provider's response decoded by its backend and encoded for the
//! client, and its errors re-rendered in the client's vocabulary.

use crate::api::ClientApi;
use crate::backend::Backend;

/// A provider's error body for the client: (status, body).
pub fn translate_error(
    backend: &dyn Backend,
    client: &dyn ClientApi,
    status: u16,
    body: &[u8],
) -> (u16, Vec<u8>) {
    client.encode_error(&backend.decode_error(status, body))
}
