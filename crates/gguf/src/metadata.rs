//! Ordered metadata map with typed getters.
//!
//! File order is kept (a `Vec` plus a name index) so that a read → write cycle reproduces the
//! original key order, which llama.cpp tools print and diffing relies on.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::value::{Array, Value};

/// GGUF key/value metadata in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from pairs; a repeated key is an error.
    pub fn from_pairs<I, K>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<String>,
    {
        let mut m = Metadata::new();
        for (k, v) in pairs {
            m.push_new(k.into(), v)?;
        }
        Ok(m)
    }

    /// Appends a key that must not already be present.
    pub fn push_new(&mut self, key: String, value: Value) -> Result<()> {
        if self.index.contains_key(&key) {
            return Err(Error::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Sets `key`: replaces the value in place if present, else appends. Returns the old value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => self
                .entries
                .get_mut(i)
                .map(|e| std::mem::replace(&mut e.1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Appends or replaces every pair of `other`, in its order.
    pub fn extend<I, K>(&mut self, other: I)
    where
        I: IntoIterator<Item = (K, Value)>,
        K: Into<String>,
    {
        for (k, v) in other {
            self.insert(k, v);
        }
    }

    /// Removes a key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Pairs in file order, as a slice.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index
            .get(key)
            .and_then(|&i| self.entries.get(i))
            .map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_string(),
        })
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| Error::WrongType {
                key: key.to_string(),
                expected: expected.to_string(),
                found: v.type_description(),
            }),
        }
    }

    fn required<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T> {
        self.require(key)?;
        self.typed(key, expected, f)?
            .ok_or_else(|| Error::MissingKey {
                key: key.to_string(),
            })
    }

    /// Integer value fitting `u32` (any integer type).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.required(key, "integer fitting u32", Value::as_u32)
    }
    /// Integer value fitting `u64` (any integer type).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.required(key, "integer fitting u64", Value::as_u64)
    }
    /// Integer value fitting `i64` (any integer type).
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.required(key, "integer fitting i64", Value::as_i64)
    }
    /// Float value (f32 or f64).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.required(key, "float", Value::as_f32)
    }
    /// String value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.required(key, "string", Value::as_str)
    }
    /// Bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.required(key, "bool", Value::as_bool)
    }
    /// Array value.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        self.required(key, "array", Value::as_array)
    }
    /// String array value.
    pub fn get_string_array(&self, key: &str) -> Result<&[String]> {
        self.required(key, "array<string>", Value::as_string_array)
    }

    /// Like [`Metadata::get_u32`] but `Ok(None)` when absent.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.typed(key, "integer fitting u32", Value::as_u32)
    }
    /// Like [`Metadata::get_u64`] but `Ok(None)` when absent.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "integer fitting u64", Value::as_u64)
    }
    /// Like [`Metadata::get_f32`] but `Ok(None)` when absent.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "float", Value::as_f32)
    }
    /// Like [`Metadata::get_str`] but `Ok(None)` when absent.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "string", Value::as_str)
    }
    /// Like [`Metadata::get_bool`] but `Ok(None)` when absent.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "bool", Value::as_bool)
    }
    /// Like [`Metadata::get_array`] but `Ok(None)` when absent.
    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>> {
        self.typed(key, "array", Value::as_array)
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Metadata {
    /// Later duplicates replace earlier values (use [`Metadata::from_pairs`] to reject them).
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        m.extend(iter);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_reports_typed_errors() {
        let mut m = Metadata::new();
        m.insert("b", 1u32);
        m.insert("a", "x");
        m.insert("b", 2u8);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(m.get_u32("b").ok(), Some(2));
        assert!(matches!(m.get_u32("a"), Err(Error::WrongType { key, .. }) if key == "a"));
        assert!(matches!(m.get_u32("zz"), Err(Error::MissingKey { key }) if key == "zz"));
        assert_eq!(m.opt_u32("zz").ok(), Some(None));
        assert_eq!(m.remove("b"), Some(Value::U8(2)));
        assert_eq!(m.get_str("a").ok(), Some("x"));
        assert!(matches!(
            Metadata::from_pairs([("k", Value::U8(1)), ("k", Value::U8(2))]),
            Err(Error::DuplicateKey { .. })
        ));
    }
}
