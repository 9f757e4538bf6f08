//! Checking a JSON schema against the supported subset, and the limits added before compiling it.

use serde_json::{Map, Value};

use super::GrammarError;

/// Strings whose schema sets no `maxLength` (nor `enum`, `const`, `pattern` or `format`) are
/// limited to this many characters, so that every string terminates.
pub const DEFAULT_MAX_STRING_CHARS: u64 = 256;

/// Arrays whose schema sets no `maxItems` hold at most this many items.
pub const DEFAULT_MAX_ITEMS: u64 = 64;

const TYPES: [&str; 7] = [
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Keywords that only annotate a schema.
const ANNOTATIONS: [&str; 7] = [
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
];

/// Keywords that constrain the output and are compiled.
const KEYWORDS: [&str; 22] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "anyOf",
    "allOf",
    "$ref",
    "$defs",
];

/// Checks `schema` and returns the copy that is compiled: every string without a length bound gets
/// `maxLength` [`DEFAULT_MAX_STRING_CHARS`], every array without `maxItems` gets
/// [`DEFAULT_MAX_ITEMS`], and objects that list `properties` but say nothing of
/// `additionalProperties` admit no other property. Each of these only narrows the set of
/// documents, so everything generated still validates against the original schema.
pub fn prepare(schema: &Value) -> Result<Value, GrammarError> {
    let mut out = schema.clone();
    prepare_node(&mut out, "")?;
    Ok(out)
}

fn bad(path: &str, keyword: &str, expected: &'static str) -> GrammarError {
    GrammarError::BadKeyword {
        path: display_path(path),
        keyword: keyword.to_string(),
        expected,
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn non_negative(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<u64>, GrammarError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(path, key, "a non-negative integer")),
    }
}

fn number(obj: &Map<String, Value>, path: &str, key: &str) -> Result<Option<f64>, GrammarError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(path, key, "a number")),
    }
}

fn prepare_node(node: &mut Value, path: &str) -> Result<(), GrammarError> {
    let obj = match node {
        Value::Bool(true) => {
            return Err(GrammarError::Unbounded {
                path: display_path(path),
                what: "`true` admits any value",
            })
        }
        Value::Bool(false) => return Ok(()),
        Value::Object(obj) => obj,
        _ => {
            return Err(GrammarError::NotASchema {
                path: display_path(path),
            })
        }
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
    {
        return Err(GrammarError::UnsupportedKeyword {
            path: display_path(path),
            keyword: k.clone(),
        });
    }

    // type
    let types: Vec<String> = match obj.get("type") {
        None => Vec::new(),
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(path, "type", "a type name or an array of type names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad(path, "type", "a type name or an array of type names")),
    };
    if let Some(t) = types.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return Err(GrammarError::UnknownType {
            path: display_path(path),
            name: t.clone(),
        });
    }
    if obj.contains_key("type") && types.is_empty() {
        return Err(bad(path, "type", "at least one type name"));
    }
    let has = |t: &str| types.iter().any(|x| x == t);
    if !["type", "enum", "const", "anyOf", "allOf", "$ref"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return Err(GrammarError::Unbounded {
            path: display_path(path),
            what: "a schema without `type`, `enum`, `const`, `anyOf`, `allOf` or `$ref` admits any value",
        });
    }
    if has("object") {
        let open = match obj.get("additionalProperties") {
            None => !obj.contains_key("properties"),
            Some(v) => v == &Value::Bool(true),
        };
        if open {
            return Err(GrammarError::Unbounded {
                path: display_path(path),
                what: "an object whose other properties may be anything (set `properties`, or `additionalProperties` to false or a schema)",
            });
        }
    }

    // enum
    if let Some(e) = obj.get("enum") {
        let values = e.as_array().ok_or_else(|| bad(path, "enum", "an array"))?;
        if values.is_empty() {
            return Err(GrammarError::EmptyEnum {
                path: display_path(path),
            });
        }
    }

    // objects
    let declared: Vec<String> = match obj.get("properties") {
        None => Vec::new(),
        Some(Value::Object(props)) => props.keys().cloned().collect(),
        Some(_) => return Err(bad(path, "properties", "an object of schemas")),
    };
    if let Some(req) = obj.get("required") {
        let names = req
            .as_array()
            .ok_or_else(|| bad(path, "required", "an array of property names"))?;
        for name in names {
            let name = name
                .as_str()
                .ok_or_else(|| bad(path, "required", "an array of property names"))?;
            if !declared.iter().any(|d| d == name) {
                return Err(GrammarError::RequiredNotDeclared {
                    path: display_path(path),
                    name: name.to_string(),
                });
            }
        }
    }
    match obj.get("additionalProperties") {
        None | Some(Value::Bool(_)) | Some(Value::Object(_)) => {}
        Some(_) => return Err(bad(path, "additionalProperties", "a boolean or a schema")),
    }

    // bounds
    let min_items = non_negative(obj, path, "minItems")?;
    let max_items = non_negative(obj, path, "maxItems")?;
    if let (Some(lo), Some(hi)) = (min_items, max_items) {
        if lo > hi {
            return Err(GrammarError::Contradiction {
                path: display_path(path),
                detail: format!("minItems {lo} > maxItems {hi}"),
            });
        }
    }
    let min_len = non_negative(obj, path, "minLength")?;
    let max_len = non_negative(obj, path, "maxLength")?;
    if let (Some(lo), Some(hi)) = (min_len, max_len) {
        if lo > hi {
            return Err(GrammarError::Contradiction {
                path: display_path(path),
                detail: format!("minLength {lo} > maxLength {hi}"),
            });
        }
    }
    let lo = number(obj, path, "minimum")?;
    let hi = number(obj, path, "maximum")?;
    number(obj, path, "exclusiveMinimum")?;
    number(obj, path, "exclusiveMaximum")?;
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo > hi {
            return Err(GrammarError::Contradiction {
                path: display_path(path),
                detail: format!("minimum {lo} > maximum {hi}"),
            });
        }
    }
    for k in ["pattern", "format", "$ref"] {
        if obj.get(k).is_some_and(|v| !v.is_string()) {
            return Err(bad(path, k, "a string"));
        }
    }

    // Limits that make every generation terminate.
    let fixed = ["enum", "const", "pattern", "format"]
        .iter()
        .any(|k| obj.contains_key(*k));
    if has("string") && max_len.is_none() && !fixed {
        let cap = DEFAULT_MAX_STRING_CHARS.max(min_len.unwrap_or(0));
        obj.insert("maxLength".into(), cap.into());
    }
    if has("array")
        && max_items.is_none()
        && !obj.contains_key("enum")
        && !obj.contains_key("const")
    {
        let cap = DEFAULT_MAX_ITEMS.max(min_items.unwrap_or(0));
        obj.insert("maxItems".into(), cap.into());
    }
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }

    // Subschemas.
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for (k, v) in props.iter_mut() {
            prepare_node(v, &format!("{path}/properties/{}", escape(k)))?;
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = obj.get_mut(key) {
            if !v.is_boolean() {
                prepare_node(v, &format!("{path}/{key}"))?;
            }
        }
    }
    for key in ["prefixItems", "anyOf", "allOf"] {
        if let Some(v) = obj.get_mut(key) {
            let Value::Array(items) = v else {
                return Err(bad(path, key, "an array of schemas"));
            };
            if items.is_empty() {
                return Err(bad(path, key, "a non-empty array of schemas"));
            }
            for (i, s) in items.iter_mut().enumerate() {
                prepare_node(s, &format!("{path}/{key}/{i}"))?;
            }
        }
    }
    if let Some(v) = obj.get_mut("$defs") {
        let Value::Object(defs) = v else {
            return Err(bad(path, "$defs", "an object of schemas"));
        };
        for (k, s) in defs.iter_mut() {
            prepare_node(s, &format!("{path}/$defs/{}", escape(k)))?;
        }
    }
    Ok(())
}
