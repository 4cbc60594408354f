//! Checks shared by the services' requests: required fields, lengths, pages and state
//! filters, each failing with `INVALID_ARGUMENT` naming the field.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use synod_proto::v1 as pb;

use super::convert::{page_token, parse_page_token};
use super::ApiError;

/// Items per page when a request does not say.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Most items a page may ask for.
pub const PAGE_SIZE_MAX: usize = 1000;

/// A required, non-empty string field.
pub fn require(field: &str, value: &str) -> Result<(), ApiError> {
    match value.is_empty() {
        true => Err(ApiError::invalid(field, "required")),
        false => Ok(()),
    }
}

/// A string field of at most `max` characters.
pub fn check_chars(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    match chars > max {
        true => Err(ApiError::invalid(
            field,
            format!("{chars} chars, the limit is {max}"),
        )),
        false => Ok(()),
    }
}

/// The page size asked for, with the default applied.
pub fn page_size(page: Option<&pb::PageRequest>) -> Result<usize, ApiError> {
    match page.map_or(0, |p| p.page_size as usize) {
        0 => Ok(PAGE_SIZE_DEFAULT),
        size if size > PAGE_SIZE_MAX => Err(ApiError::invalid(
            "page.page_size",
            format!("{size} exceeds the maximum of {PAGE_SIZE_MAX}"),
        )),
        size => Ok(size),
    }
}

/// The list position a page token carries, `None` on the first page.
pub fn page_position(page: Option<&pb::PageRequest>) -> Result<Option<u64>, ApiError> {
    let token = page.map_or("", |p| p.page_token.as_str());
    if token.is_empty() {
        return Ok(None);
    }
    let position = parse_page_token(token).and_then(|text| text.parse().ok());
    position
        .map(Some)
        .ok_or_else(|| ApiError::invalid("page.page_token", "not a token from a previous page"))
}

/// The token of the page after one ending at `position`, empty when there is none.
pub fn next_token(more: bool, position: Option<u64>) -> String {
    match (more, position) {
        (true, Some(position)) => page_token(&position.to_string()),
        _ => String::new(),
    }
}

/// Checked state filters: known, specified values only.
pub fn state_filter<E: TryFrom<i32>>(
    field: &str,
    states: &[i32],
) -> Result<BTreeSet<i32>, ApiError> {
    for (i, &state) in states.iter().enumerate() {
        if state == 0 || E::try_from(state).is_err() {
            return Err(ApiError::invalid(
                format!("{field}[{i}]"),
                format!("unknown state {state}"),
            ));
        }
    }
    Ok(states.iter().copied().collect())
}

/// A random id (UUID v4), or with an idempotency key a UUID (v8) derived from `scope` and the
/// key, so a retried request names the same object.
pub fn id_for(scope: &str, idempotency_key: &str) -> String {
    if idempotency_key.is_empty() {
        return uuid::Uuid::new_v4().to_string();
    }
    let digest = Sha256::digest(format!("{scope}/{idempotency_key}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}
