//! JSON-schema constrained decoding: the automaton accepts exactly the valid documents, invalid
//! schemas are typed errors, and sampled generations (random walks over the mask, and a real
//! model at temperature 1.0) always parse and validate.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};
use shuku_infer::grammar::schema::{DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING_CHARS};
use shuku_infer::{
    generate_json, Engine, EngineOptions, GrammarError, GrammarVocab, JsonSchemaConstraint,
    Tokenizer,
};

fn seed_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number"}
        },
        "required": ["summary", "sentiment", "score"]
    })
}

fn glass_path() -> std::path::PathBuf {
    shuku_testkit::shared("data/models/glassllm-en-q8_0.gguf")
}

fn smol_path() -> std::path::PathBuf {
    shuku_testkit::asset("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// SmolLM2's byte-level BPE vocabulary (49k tokens) and its trie, shared by the unit tests.
fn smol_vocab() -> &'static (Tokenizer, GrammarVocab) {
    static V: OnceLock<(Tokenizer, GrammarVocab)> = OnceLock::new();
    V.get_or_init(|| {
        let file = shuku_gguf::GgufFile::open(smol_path()).unwrap();
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let vocab = GrammarVocab::new(&tok).unwrap();
        (tok, vocab)
    })
}

fn constraint(schema: &Value) -> JsonSchemaConstraint {
    JsonSchemaConstraint::with_vocab(schema, &smol_vocab().1).unwrap()
}

/// Feeds `doc` through the constraint token by token (its own tokenization); whether every token
/// was allowed and the document is complete.
fn accepts(schema: &Value, doc: &str) -> bool {
    let (tok, _) = smol_vocab();
    let mut c = constraint(schema);
    for t in tok.encode(doc, false, false).unwrap() {
        if c.accept(t).is_err() {
            return false;
        }
    }
    c.is_complete()
}

// ----- An independent validator for the subset, used on every generated document. -----

fn validate(v: &Value, s: &Value, path: &str) -> Result<(), String> {
    let err = |m: String| Err(format!("{path}: {m}"));
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return err(format!("{v} not in enum {e:?}"));
        }
    }
    let Some(ty) = s.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    match ty {
        "object" => {
            let Some(o) = v.as_object() else {
                return err(format!("{v} is not an object"));
            };
            let props = s.get("properties").and_then(Value::as_object);
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !o.contains_key(r.as_str().unwrap()) {
                    return err(format!("missing required {r}"));
                }
            }
            for (k, x) in o {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => validate(x, ps, &format!("{path}/{k}"))?,
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return err(format!("unexpected property {k}"))
                    }
                    None => {}
                }
            }
        }
        "array" => {
            let Some(a) = v.as_array() else {
                return err(format!("{v} is not an array"));
            };
            let n = a.len() as u64;
            if s.get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
                || s.get("maxItems")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| n > m)
            {
                return err(format!("{n} items out of bounds"));
            }
            if let Some(items) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    validate(x, items, &format!("{path}/{i}"))?;
                }
            }
        }
        "string" => {
            let Some(x) = v.as_str() else {
                return err(format!("{v} is not a string"));
            };
            let n = x.chars().count() as u64;
            if s.get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
                || s.get("minLength")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| n < m)
            {
                return err(format!("string of {n} chars out of bounds"));
            }
        }
        "number" => {
            if !v.is_number() {
                return err(format!("{v} is not a number"));
            }
        }
        "integer" => {
            // As in JSON Schema, `-0` and `1.0` are integers.
            if !v.as_f64().is_some_and(|x| x.fract() == 0.0) {
                return err(format!("{v} is not an integer"));
            }
        }
        "boolean" => {
            if !v.is_boolean() {
                return err(format!("{v} is not a boolean"));
            }
        }
        "null" => {
            if !v.is_null() {
                return err(format!("{v} is not null"));
            }
        }
        t => return err(format!("unknown type {t}")),
    }
    if let Some(x) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x < m)
            || s.get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| x > m)
        {
            return err(format!("{x} out of range"));
        }
    }
    Ok(())
}

fn check_document(text: &str, schema: &Value) {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("does not parse ({e}): {text:?}"));
    validate(&v, schema, "").unwrap_or_else(|e| panic!("does not validate ({e}): {text:?}"));
}

// ----- The automaton. -----

#[test]
fn seed_schema_accepts_valid_documents() {
    let s = seed_schema();
    assert!(accepts(
        &s,
        r#"{"summary": "Great food.", "sentiment": "positive", "score": 0.9}"#
    ));
    assert!(accepts(
        &s,
        r#"{"summary":"meh \"ok\" \\ \n é","sentiment":"neutral","score":-1.5e3}"#
    ));
    assert!(accepts(
        &s,
        "{\n  \"summary\": \"x\",\n  \"sentiment\": \"negative\",\n  \"score\": 3\n}"
    ));
}

#[test]
fn seed_schema_rejects_invalid_documents() {
    let s = seed_schema();
    // Not in the enum.
    assert!(!accepts(
        &s,
        r#"{"summary": "a", "sentiment": "happy", "score": 1}"#
    ));
    // Missing a required property.
    assert!(!accepts(&s, r#"{"summary": "a", "sentiment": "positive"}"#));
    // Wrong type.
    assert!(!accepts(
        &s,
        r#"{"summary": 5, "sentiment": "positive", "score": 1}"#
    ));
    assert!(!accepts(
        &s,
        r#"{"summary": "a", "sentiment": "positive", "score": "1"}"#
    ));
    // A property the schema does not declare.
    assert!(!accepts(
        &s,
        r#"{"summary": "a", "sentiment": "positive", "score": 1, "x": 1}"#
    ));
    // Not JSON: trailing comma, unterminated, raw newline in a string, bad escape.
    assert!(!accepts(
        &s,
        r#"{"summary": "a", "sentiment": "positive", "score": 1,}"#
    ));
    assert!(!accepts(&s, r#"{"summary": "a"#));
    assert!(!accepts(
        &s,
        "{\"summary\": \"a\nb\", \"sentiment\": \"positive\", \"score\": 1}"
    ));
    assert!(!accepts(
        &s,
        r#"{"summary": "\q", "sentiment": "positive", "score": 1}"#
    ));
    // Prose around the object.
    assert!(!accepts(
        &s,
        r#"Here: {"summary": "a", "sentiment": "positive", "score": 1}"#
    ));
    // Whitespace runs longer than one newline and the indentation limit.
    assert!(!accepts(
        &s,
        "{\n\n\"summary\": \"a\", \"sentiment\": \"positive\", \"score\": 1}"
    ));
}

#[test]
fn scalar_types() {
    let int = json!({"type": "integer"});
    assert!(accepts(&int, "42"));
    assert!(accepts(&int, "-7"));
    assert!(!accepts(&int, "4.2"));
    assert!(!accepts(&int, "042"));
    let num = json!({"type": "number", "minimum": 0, "maximum": 1});
    assert!(accepts(&num, "0.25"));
    assert!(!accepts(&num, "1.5"));
    assert!(!accepts(&num, "-0.5"));
    let b = json!({"type": "boolean"});
    assert!(accepts(&b, "true"));
    assert!(accepts(&b, "false"));
    assert!(!accepts(&b, "1"));
    assert!(!accepts(&b, "\"true\""));
    let n = json!({"type": "null"});
    assert!(accepts(&n, "null"));
    assert!(!accepts(&n, "nil"));
    let s = json!({"type": "string", "minLength": 2, "maxLength": 4});
    assert!(accepts(&s, "\"abcd\""));
    assert!(!accepts(&s, "\"a\""));
    assert!(!accepts(&s, "\"abcde\""));
}

#[test]
fn string_length_is_capped_by_default() {
    let s = json!({"type": "string"});
    let ok = format!("\"{}\"", "a".repeat(DEFAULT_MAX_STRING_CHARS as usize));
    let long = format!("\"{}\"", "a".repeat(DEFAULT_MAX_STRING_CHARS as usize + 1));
    assert!(accepts(&s, &ok));
    assert!(!accepts(&s, &long));
}

#[test]
fn enums_of_strings_and_numbers() {
    let e = json!({"enum": ["red", "green", 3, null]});
    for ok in ["\"red\"", "\"green\"", "3", "null"] {
        assert!(accepts(&e, ok), "{ok}");
    }
    for bad in ["\"blue\"", "\"re\"", "4", "30", "true"] {
        assert!(!accepts(&e, bad), "{bad}");
    }
}

#[test]
fn arrays_and_nesting() {
    let a = json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
            "required": ["id"]
        },
        "minItems": 1,
        "maxItems": 3
    });
    assert!(accepts(&a, r#"[{"id": 1}]"#));
    assert!(accepts(
        &a,
        r#"[{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}]"#
    ));
    assert!(!accepts(&a, "[]"));
    assert!(!accepts(
        &a,
        r#"[{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]"#
    ));
    assert!(!accepts(&a, r#"[{"id": 1, "tags": ["a", "b", "c"]}]"#));
    assert!(!accepts(&a, r#"[{"tags": []}]"#));
    assert!(!accepts(&a, r#"[{"id": "1"}]"#));
    // Unbounded arrays get a default cap.
    let u = json!({"type": "array", "items": {"type": "integer"}});
    let max = DEFAULT_MAX_ITEMS as usize;
    let list = |n: usize| format!("[{}]", vec!["1"; n].join(","));
    assert!(accepts(&u, &list(max)));
    assert!(!accepts(&u, &list(max + 1)));
}

#[test]
fn additional_properties_when_allowed() {
    let o = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "boolean"}
    });
    assert!(accepts(&o, r#"{"a": 1, "b": true}"#));
    assert!(!accepts(&o, r#"{"a": 1, "b": 2}"#));
}

#[test]
fn end_of_generation_only_when_complete() {
    let (tok, vocab) = smol_vocab();
    let eog: Vec<u32> = tok.eog_ids().collect();
    assert!(!eog.is_empty());
    let mut c = JsonSchemaConstraint::with_vocab(&seed_schema(), vocab).unwrap();
    let doc = r#"{"summary": "a", "sentiment": "positive", "score": 1}"#;
    let ids = tok.encode(doc, false, false).unwrap();
    for &t in &ids {
        assert!(!c.is_complete());
        let allowed = c.allowed_tokens().unwrap();
        assert!(eog.iter().all(|&e| !allowed.get(e as usize)));
        c.accept(t).unwrap();
    }
    assert!(c.is_complete());
    let allowed = c.allowed_tokens().unwrap();
    assert!(eog.iter().all(|&e| allowed.get(e as usize)));
    // Control tokens that do not end generation are never allowed.
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert!(!allowed.get(im_start as usize));
    c.accept(eog[0]).unwrap();
    assert!(c.is_stopped());
    // A rejected token is a typed error and leaves the constraint usable.
    let mut c = JsonSchemaConstraint::with_vocab(&seed_schema(), vocab).unwrap();
    let x = tok.encode("x", false, false).unwrap()[0];
    assert!(matches!(
        c.accept(x),
        Err(GrammarError::TokenRejected { token, .. }) if token == x
    ));
    c.accept(tok.encode("{", false, false).unwrap()[0]).unwrap();
}

#[test]
fn mask_sets_disallowed_logits_to_minus_infinity() {
    let (tok, vocab) = smol_vocab();
    let mut c = JsonSchemaConstraint::with_vocab(&seed_schema(), vocab).unwrap();
    let mut logits = vec![0.0f32; tok.vocab_size() + 7];
    c.mask(&mut logits).unwrap();
    let open = tok.encode("{", false, false).unwrap()[0] as usize;
    assert_eq!(logits[open], 0.0);
    assert!(logits[tok.vocab_size()..]
        .iter()
        .all(|l| *l == f32::NEG_INFINITY));
    let allowed = logits.iter().filter(|l| l.is_finite()).count();
    assert!(
        allowed > 0 && allowed < 100,
        "{allowed} tokens may open the object"
    );
}

// ----- Invalid schemas. -----

fn schema_error(schema: Value) -> GrammarError {
    JsonSchemaConstraint::with_vocab(&schema, &smol_vocab().1).unwrap_err()
}

#[test]
fn invalid_schemas_are_typed_errors() {
    let e = schema_error(json!({"type": "nosuchtype"}));
    assert!(
        matches!(&e, GrammarError::UnknownType { name, path } if name == "nosuchtype" && path == "/"),
        "{e:?}"
    );
    assert!(e.to_string().contains("nosuchtype"), "{e}");

    let e = schema_error(json!({"type": "object", "properties": {"a": {"enum": []}}}));
    assert!(
        matches!(&e, GrammarError::EmptyEnum { path } if path == "/properties/a"),
        "{e:?}"
    );

    let e = schema_error(json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a", "b"]
    }));
    assert!(
        matches!(&e, GrammarError::RequiredNotDeclared { name, .. } if name == "b"),
        "{e:?}"
    );
    assert!(e.to_string().contains("`b`"), "{e}");

    let e = schema_error(
        json!({"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 1}),
    );
    assert!(matches!(&e, GrammarError::Contradiction { .. }), "{e:?}");

    let e = schema_error(json!({"type": "string", "maxLength": -1}));
    assert!(
        matches!(&e, GrammarError::BadKeyword { keyword, .. } if keyword == "maxLength"),
        "{e:?}"
    );

    let e = schema_error(json!({"type": "object", "patternProperties": {}}));
    assert!(
        matches!(&e, GrammarError::UnsupportedKeyword { keyword, .. } if keyword == "patternProperties"),
        "{e:?}"
    );

    let e = schema_error(json!({"type": "object", "properties": {"a": 3}}));
    assert!(
        matches!(&e, GrammarError::NotASchema { path } if path == "/properties/a"),
        "{e:?}"
    );

    for unbounded in [
        json!(true),
        json!({}),
        json!({"type": "object"}),
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": true}),
        json!({"type": "array", "items": {"description": "anything"}}),
    ] {
        let e = schema_error(unbounded.clone());
        assert!(
            matches!(e, GrammarError::Unbounded { .. }),
            "{unbounded}: {e:?}"
        );
    }

    let e = JsonSchemaConstraint::with_vocab("{not json", &smol_vocab().1).unwrap_err();
    assert!(matches!(e, GrammarError::SchemaNotJson(_)), "{e:?}");

    // Schemas the compiler finds unsatisfiable.
    let e = schema_error(json!({"type": "string", "enum": [1, 2]}));
    assert!(matches!(e, GrammarError::Compile(_)), "{e:?}");
}

// ----- Sampling. -----

/// Uniformly random walks over the mask: every walk ends in a complete document within the
/// budget that parses and validates, and the mask is never empty on the way.
#[test]
fn random_walks_terminate_and_validate() {
    let (tok, vocab) = smol_vocab();
    let schemas = [
        seed_schema(),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "age": {"type": "integer"},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
                "nothing": {"type": "null"}
            },
            "required": ["name", "age", "ok"]
        }),
    ];
    let mut rng = shuku_testkit::TestRng(0x1234_5678_9abc_def0);
    for schema in &schemas {
        let fresh = JsonSchemaConstraint::with_vocab(schema, vocab).unwrap();
        for _ in 0..6 {
            let mut c = fresh.clone();
            let mut steps = 0;
            while !c.is_stopped() {
                let allowed = c.allowed_tokens().unwrap().to_list();
                assert!(!allowed.is_empty());
                // Prefer ending as soon as allowed, else a random allowed token.
                let eog = allowed.iter().copied().find(|&t| tok.is_eog(t));
                let t = eog.unwrap_or(allowed[(rng.next_u64() % allowed.len() as u64) as usize]);
                c.accept(t).unwrap();
                steps += 1;
                assert!(
                    steps < 4000,
                    "no end: {:?}",
                    String::from_utf8_lossy(c.text())
                );
            }
            check_document(std::str::from_utf8(c.text()).unwrap(), schema);
        }
    }
}

const REVIEW: &str = "The pasta was cold and the waiter ignored us for twenty minutes, \
                      but the dessert was excellent.";

fn run_generations(
    path: &std::path::Path,
    prompt: &str,
    schema: &Value,
    n: u64,
    max_tokens: usize,
) -> Vec<Result<String, GrammarError>> {
    let engine = Engine::load(path, EngineOptions::default()).unwrap();
    let tok = engine.tokenizer();
    let t = Instant::now();
    let vocab = GrammarVocab::new(tok).unwrap();
    let built = t.elapsed();
    let fresh = JsonSchemaConstraint::with_vocab(schema, &vocab).unwrap();
    eprintln!(
        "vocabulary trie of {} tokens in {:.0} ms, schema compiled in {:.0} ms",
        vocab.len(),
        built.as_secs_f64() * 1e3,
        (t.elapsed() - built).as_secs_f64() * 1e3
    );
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos());
    }
    ids.extend(tok.encode(prompt, false, true).unwrap());
    let t0 = Instant::now();
    // The prompt but its last token is evaluated once; each generation starts from a copy.
    let (last, head) = ids.split_last().unwrap();
    let mut base = engine.new_session_with_context(ids.len() + max_tokens + 1);
    if !head.is_empty() {
        engine.forward(&mut base, head, false).unwrap();
    }
    let mut out = Vec::new();
    for seed in 0..n {
        let mut session = base.clone();
        let r = generate_json(
            &engine,
            &mut session,
            &[*last],
            &fresh,
            1.0,
            seed,
            max_tokens,
        );
        eprintln!("seed {seed}: {r:?}");
        out.push(r);
    }
    eprintln!(
        "{n} generations in {:.1} s ({})",
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    out
}

/// A budget no document under the seed schema can exceed: 256 characters of summary (one token
/// each at worst), an 18-character number, the keys, punctuation and whitespace.
const SEED_BUDGET: usize = 400;

fn smol_prompt() -> String {
    format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
         Analyse this restaurant review. Answer in JSON with a one-sentence summary, the \
         sentiment (positive, negative or neutral) and a score between 0 and 1.\n\n\
         Review: {REVIEW}<|im_end|>\n<|im_start|>assistant\n"
    )
}

fn smol_generations(n: u64) {
    let schema = seed_schema();
    for (seed, r) in run_generations(&smol_path(), &smol_prompt(), &schema, n, SEED_BUDGET)
        .into_iter()
        .enumerate()
    {
        let text = r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        check_document(&text, &schema);
    }
}

#[test]
fn smollm2_10_generations_parse_and_validate() {
    smol_generations(10);
}

/// glassllm's 1k vocabulary (trained on the KJV) has no `"`: it can write arrays of numbers, and
/// under a schema that needs strings generation ends in a typed dead end, never a broken document.
#[test]
fn tiny_vocabulary_without_quotes() {
    let schema = json!({
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 1000},
        "minItems": 1,
        "maxItems": 5
    });
    let prompt = "Numbers: ";
    for r in run_generations(&glass_path(), prompt, &schema, 10, 64) {
        check_document(&r.unwrap(), &schema);
    }
    for r in run_generations(&glass_path(), prompt, &seed_schema(), 2, 64) {
        assert!(matches!(r, Err(GrammarError::DeadEnd { .. })), "{r:?}");
    }
}

#[test]
#[ignore = "conformance: 100 generations of SmolLM2-135M at temperature 1.0 (about 30 s), run by scripts/test.sh"]
fn smollm2_100_generations_parse_and_validate() {
    smol_generations(100);
}

/// How long masking takes over SmolLM2's 49k vocabulary (printed; the bound is loose).
#[test]
fn mask_speed_over_a_49k_vocabulary() {
    let (tok, vocab) = smol_vocab();
    let doc = r#"{"summary": "The pasta was cold but the dessert was excellent, so mixed overall.", "sentiment": "neutral", "score": 0.55}"#;
    let ids = tok.encode(doc, false, false).unwrap();
    let mut c = JsonSchemaConstraint::with_vocab(&seed_schema(), vocab).unwrap();
    let mut logits = vec![0.0f32; tok.vocab_size()];
    let t0 = Instant::now();
    for &t in &ids {
        logits.iter_mut().for_each(|l| *l = 0.0);
        c.mask(&mut logits).unwrap();
        assert!(logits[t as usize].is_finite());
        c.accept(t).unwrap();
    }
    let per = t0.elapsed().as_secs_f64() * 1e3 / ids.len() as f64;
    eprintln!(
        "mask + accept: {per:.3} ms per token over {} tokens ({} steps)",
        tok.vocab_size(),
        ids.len()
    );
    assert!(c.is_complete());
    assert!(per < 50.0, "{per} ms per token");
}
