//! Page cursors of the list routes: opaque to the caller (URL-safe base64 of `v1:{position}`),
//! a position only inside the caller's own partition, so a forged one can at worst skip around
//! the caller's own items.

use crate::error::ApiError;
use base64::Engine;

pub fn encode(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{position}"))
}

/// The position a cursor holds; 400 naming `cursor` when it is not one of ours.
pub fn decode(cursor: &str) -> Result<String, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix("v1:")
        .map(str::to_string)
        .ok_or_else(invalid)
}

pub fn invalid() -> ApiError {
    ApiError::validation(
        "cursor",
        "Invalid cursor: pass back the next_cursor of a previous page",
    )
}
