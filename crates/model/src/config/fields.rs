//! Typed access to the fields of a JSON object, producing errors that name file and field.

use serde_json::{Map, Value};

use crate::error::{ConfigProblem, ModelError, Result};

/// Typed access to the fields of a JSON object, producing errors that name file and field.
pub(crate) struct Fields<'a> {
    pub file: &'a str,
    pub obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub fn err(&self, field: &str, problem: ConfigProblem) -> ModelError {
        ModelError::config(self.file, field, problem)
    }

    pub fn present(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn to_usize(&self, field: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(field, ConfigProblem::WrongType("a non-negative integer")))
    }

    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.present(key).map(|v| self.to_usize(key, v)).transpose()
    }

    pub fn usize_req(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.err(key, ConfigProblem::Missing))
    }

    pub fn positive(&self, key: &str) -> Result<usize> {
        match self.usize_req(key)? {
            0 => Err(self.err(key, ConfigProblem::Zero)),
            n => Ok(n),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, ConfigProblem::WrongType("a number"))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, ConfigProblem::WrongType("a boolean"))),
        }
    }

    pub fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let as_id = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.err(key, ConfigProblem::WrongType("a token id or list of ids")))
        };
        match self.present(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(as_id).collect(),
            Some(v) => Ok(vec![as_id(v)?]),
        }
    }

    /// A scalar (repeated for every layer) or a per-layer array; `None` when absent.
    pub fn per_layer(&self, key: &str, n_layers: usize) -> Result<Option<Vec<usize>>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() != n_layers {
                    return Err(self.err(
                        key,
                        ConfigProblem::LayerCount {
                            expected: n_layers,
                            found: items.len(),
                        },
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.to_usize(&format!("{key}[{i}]"), v))
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
            Some(v) => Ok(Some(vec![self.to_usize(key, v)?; n_layers])),
        }
    }
}
