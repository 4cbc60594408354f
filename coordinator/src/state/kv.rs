//! The replicated key-value namespace: keys with values and revision numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{KvCondition, Rejection};

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value accepted, in bytes.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// A stored value with its revision information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Log index of the write that created the key.
    pub create_index: u64,
    /// Log index of the latest write.
    pub mod_index: u64,
    /// Writes since creation, starting at 1.
    pub version: u64,
}

/// All keys, ordered.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, KeyValue>,
}

impl KvStore {
    /// Sets `key` if `condition` holds, at log `index`.
    pub fn put(
        &mut self,
        key: &str,
        value: &[u8],
        condition: KvCondition,
        index: u64,
    ) -> Result<KeyValue, Rejection> {
        let current = self.entries.get(key);
        check_condition(key, current, condition)?;
        let stored = match current {
            Some(previous) => KeyValue {
                value: value.to_vec(),
                mod_index: index,
                version: previous.version + 1,
                ..previous.clone()
            },
            None => KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                create_index: index,
                mod_index: index,
                version: 1,
            },
        };
        self.entries.insert(key.to_owned(), stored.clone());
        Ok(stored)
    }

    /// Removes `key`; true when it existed.
    pub fn delete(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Reads one key.
    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.entries.get(key)
    }

    /// Keys starting with `prefix` and strictly after `after` (when given), in order, at most
    /// `limit` of them.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<&KeyValue> {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.to_owned()),
            None => std::ops::Bound::Included(prefix.to_owned()),
        };
        self.entries
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(_, kv)| kv)
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn check_condition(
    key: &str,
    current: Option<&KeyValue>,
    condition: KvCondition,
) -> Result<(), Rejection> {
    let found = || match current {
        Some(kv) => format!("mod_index {}", kv.mod_index),
        None => "no key".to_owned(),
    };
    let holds = match condition {
        KvCondition::Always => true,
        KvCondition::Absent => current.is_none(),
        KvCondition::ModIndex(expected) => current.is_some_and(|kv| kv.mod_index == expected),
    };
    if holds {
        return Ok(());
    }
    let expected = match condition {
        KvCondition::Absent => "no key".to_owned(),
        KvCondition::ModIndex(index) => format!("mod_index {index}"),
        KvCondition::Always => unreachable!("an unconditional put always holds"),
    };
    Err(Rejection::KvConditionFailed {
        key: key.to_owned(),
        expected,
        found: found(),
    })
}
