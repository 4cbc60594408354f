//! Conversions between domain types and their proto messages.

use synod_proto::v1 as pb;

use crate::runtime::CommandResult;
use crate::state::KeyValue;

/// A stored key as its proto message.
pub fn key_value(kv: &KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_index: kv.create_index,
        mod_index: kv.mod_index,
        version: kv.version,
    }
}

/// Where a command was committed.
pub fn write_meta(result: &CommandResult) -> pb::WriteMeta {
    pb::WriteMeta {
        log_index: result.log_index,
        term: result.term,
        leader_id: result.leader_id,
    }
}

/// Encodes a list position as an opaque page token.
pub fn page_token(last_key: &str) -> String {
    last_key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a page token made by [`page_token`].
pub fn parse_page_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert_eq!(parse_page_token(&page_token("b/é")).as_deref(), Some("b/é"));
        assert_eq!(parse_page_token("zz"), None);
        assert_eq!(parse_page_token("abc"), None);
    }
}
