//! The key order gguf-py's writer gives metadata.
//!
//! llama.cpp's converter calls its writer key by key, and writing a key a second time replaces the
//! value where the key first appeared (a Python dict). Families rely on that: Llama writes
//! `add_space_prefix` before the vocabulary and SmolLM-sized vocabularies rewrite
//! `add_bos_token` after it. [`Kv`] keeps the same order.

use crate::value::Value;

/// Metadata in first-written order; a key written again keeps its place.
#[derive(Debug, Default)]
pub(crate) struct Kv(Vec<(String, Value)>);

impl Kv {
    /// Writes `key`, replacing the value in place when it was written before.
    pub(crate) fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub(crate) fn into_vec(self) -> Vec<(String, Value)> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_a_key_keeps_its_place() {
        let mut kv = Kv::default();
        kv.set("a", Value::Bool(true));
        kv.set("b", Value::U32(1));
        kv.set("a", Value::Bool(false));
        assert_eq!(
            kv.into_vec(),
            vec![
                ("a".to_string(), Value::Bool(false)),
                ("b".to_string(), Value::U32(1))
            ]
        );
    }
}
