//! Sampling constrained to a JSON schema.
//!
//! [`JsonSchemaConstraint`] masks the logits of every token that cannot continue a document valid
//! under the schema, so that whatever the sampler picks, the text parses and validates. The
//! automaton is [llguidance](https://github.com/guidance-ai/llguidance)'s: it compiles the schema
//! to a grammar with a regular lexer and an Earley parser, and walks a byte trie of the
//! vocabulary ([`GrammarVocab`]) against the lexer so that one mask over a 49k vocabulary costs
//! well under a millisecond. A hand-written automaton would have to redo the lexer/parser split,
//! `\u` escapes, numeric ranges and `anyOf`; llguidance builds offline from crates.io on stable
//! Rust in under a minute and takes the schema as it is.
//!
//! What is added around it:
//!
//! * The schema is checked first against the supported subset ([`schema`]): `type` (object,
//!   array, string, number, integer, boolean, null), `properties`, `required`,
//!   `additionalProperties`, `items`, `prefixItems`, `minItems`/`maxItems`, `enum`, `const`,
//!   `minLength`/`maxLength`, `pattern`, `format`, numeric bounds, `anyOf`, `allOf`, `$ref`/`$defs`
//!   and the annotations. Anything else, an unknown type, an empty `enum`, a `required` name that
//!   `properties` does not declare, or contradictory bounds is a [`GrammarError`] naming the
//!   keyword and where it is. So is a subschema that admits any value (`true`, `{}`), or an
//!   object whose other properties may be anything: generation under it need not end.
//! * Every generation terminates: strings without a bound are cut at
//!   [`schema::DEFAULT_MAX_STRING_CHARS`] characters, arrays at [`schema::DEFAULT_MAX_ITEMS`]
//!   items, objects with `properties` admit no others unless `additionalProperties` says so, a
//!   number has at most [`MAX_NUMBER_CHARS`] characters and [`MAX_EXPONENT_DIGITS`] exponent
//!   digits, and whitespace between tokens is one space or a newline and at most [`MAX_INDENT`]
//!   spaces. Two holes remain, bounded only by the caller's token budget: the number of extra
//!   properties an `additionalProperties` schema admits (and their keys' length), and the depth of
//!   a recursive `$ref`.
//! * End-of-generation tokens are allowed exactly when the document is complete; other control
//!   tokens never are.
//! * Strings are written in the canonical JSON quoting (`\u` escapes only for control
//!   characters; other characters as UTF-8).
//! * A vocabulary that cannot spell what the schema needs (a model without a `"` token) ends in
//!   [`GrammarError::DeadEnd`], never in a broken document.
//!
//! Enabling llguidance turns on serde_json's `preserve_order` feature for the whole build (maps keep
//! insertion order).

pub mod schema;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::engine::{Engine, EngineError, Session};
use crate::generate::{FinishReason, GenerationParams};
use crate::sampler::SamplerConfig;
use crate::tokenizer::Tokenizer;

/// A number may have at most this many characters (sign, digits, point and exponent), so that
/// integers fit 64 bits and generation cannot dwell on digits.
pub const MAX_NUMBER_CHARS: usize = 18;

/// A number's exponent may have at most this many digits, so that every number fits an `f64`.
pub const MAX_EXPONENT_DIGITS: usize = 2;

/// Whitespace between two JSON tokens: one space, or a newline followed by up to this many spaces.
pub const MAX_INDENT: usize = 8;

/// What can go wrong building or following a constraint.
#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    /// The schema text is not JSON.
    #[error("the schema is not JSON: {0}")]
    SchemaNotJson(String),
    /// A subschema is neither an object nor a boolean.
    #[error("schema at {path}: a schema must be an object or a boolean")]
    NotASchema {
        /// JSON pointer of the subschema.
        path: String,
    },
    /// `type` names no JSON type.
    #[error("schema at {path}: unknown type `{name}` (expected object, array, string, number, integer, boolean or null)")]
    UnknownType {
        /// JSON pointer of the subschema.
        path: String,
        /// The name found.
        name: String,
    },
    /// `enum` lists no value, so no document validates.
    #[error("schema at {path}: `enum` is empty, so no value can satisfy it")]
    EmptyEnum {
        /// JSON pointer of the subschema.
        path: String,
    },
    /// `required` names a property that `properties` does not declare.
    #[error("schema at {path}: required property `{name}` is not declared in `properties`")]
    RequiredNotDeclared {
        /// JSON pointer of the object schema.
        path: String,
        /// The undeclared name.
        name: String,
    },
    /// A keyword's value has the wrong shape.
    #[error("schema at {path}: `{keyword}` must be {expected}")]
    BadKeyword {
        /// JSON pointer of the subschema.
        path: String,
        /// The keyword.
        keyword: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Bounds that no value meets.
    #[error("schema at {path}: {detail}")]
    Contradiction {
        /// JSON pointer of the subschema.
        path: String,
        /// Which bounds.
        detail: String,
    },
    /// A keyword outside the supported subset.
    #[error("schema at {path}: keyword `{keyword}` is not supported")]
    UnsupportedKeyword {
        /// JSON pointer of the subschema.
        path: String,
        /// The keyword.
        keyword: String,
    },
    /// A subschema that admits values of any size, so generation need not end.
    #[error("schema at {path}: {what}")]
    Unbounded {
        /// JSON pointer of the subschema.
        path: String,
        /// What is unbounded.
        what: &'static str,
    },
    /// The grammar compiler rejected the schema.
    #[error("the schema cannot be compiled: {0}")]
    Compile(String),
    /// A token the constraint does not allow here.
    #[error("token {token} ({piece:?}) is not allowed after {text:?}")]
    TokenRejected {
        /// The token.
        token: u32,
        /// Its bytes, lossily decoded.
        piece: String,
        /// The document so far, lossily decoded.
        text: String,
    },
    /// No token can continue the document: the vocabulary cannot spell what the schema needs next
    /// (e.g. a model whose vocabulary has no `"`).
    #[error("no token can continue {text:?}")]
    DeadEnd {
        /// The document so far, lossily decoded.
        text: String,
    },
    /// The automaton failed.
    #[error("grammar engine: {0}")]
    Internal(String),
    /// Generation ran out of tokens before the document was complete.
    #[error("{max_tokens} tokens generated and the document is not complete: {text:?}")]
    Unfinished {
        /// The token budget.
        max_tokens: usize,
        /// The document so far, lossily decoded.
        text: String,
    },
    /// The model failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The vocabulary as the automaton sees it: a byte trie of every token and the end-of-generation
/// set. Build it once per tokenizer and share it between constraints.
#[derive(Clone)]
pub struct GrammarVocab {
    factory: Arc<ParserFactory>,
    eog: Vec<u32>,
    /// Per token: bit 0 = it holds a byte that may belong to a number (`0-9 + - . e E`), bit 1 =
    /// it holds a quote.
    flags: Vec<u8>,
    pieces: Arc<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for GrammarVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarVocab")
            .field("tokens", &self.pieces.len())
            .field("eog", &self.eog)
            .finish()
    }
}

impl GrammarVocab {
    /// The trie of `tokenizer`'s tokens. Control tokens are marked special (they match no text);
    /// unknown and empty tokens match nothing.
    pub fn new(tokenizer: &Tokenizer) -> Result<GrammarVocab, GrammarError> {
        let n = tokenizer.vocab_size();
        let mut words = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let piece = tokenizer.token_to_piece(id, true);
            if tokenizer.is_control(id) || tokenizer.is_eog(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(piece);
                words.push(w);
            } else {
                words.push(tokenizer.token_to_piece(id, false).to_vec());
            }
        }
        let eog: Vec<u32> = tokenizer.eog_ids().filter(|&t| (t as usize) < n).collect();
        let eos = tokenizer
            .eos()
            .filter(|&t| (t as usize) < n)
            .or_else(|| eog.first().copied())
            .unwrap_or(0);
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tokenizer.bos();
        info.tok_end_of_turn = tokenizer.eot();
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Internal(e.to_string()))?;
        factory.quiet();
        let flags = words
            .iter()
            .map(|w| {
                let num = w
                    .iter()
                    .any(|&b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
                u8::from(num) | (u8::from(w.contains(&b'"')) << 1)
            })
            .collect();
        Ok(GrammarVocab {
            factory: Arc::new(factory),
            eog,
            flags,
            pieces: Arc::new(words),
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

/// Where the document stands lexically, for the limits on numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    in_string: bool,
    escaped: bool,
    /// Characters of the number being written (0 when not in a number).
    number: usize,
    /// Digits of its exponent, once `e` or `E` was written.
    exponent: Option<usize>,
}

impl Scan {
    /// Advances over `b`; false when a number grows past its limits.
    fn push(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return true;
        }
        match b {
            b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' => {
                self.number += 1;
                if matches!(b, b'e' | b'E') {
                    self.exponent = Some(0);
                } else if b.is_ascii_digit() {
                    if let Some(e) = &mut self.exponent {
                        *e += 1;
                    }
                }
            }
            _ => {
                self.in_string = b == b'"';
                self.number = 0;
                self.exponent = None;
            }
        }
        self.number <= MAX_NUMBER_CHARS && self.exponent.unwrap_or(0) <= MAX_EXPONENT_DIGITS
    }
}

/// Token masking for one document under a JSON schema.
///
/// Per step: [`mask`](Self::mask) the logits, sample, then [`accept`](Self::accept) the token.
/// The document is done when [`is_complete`](Self::is_complete) and an end-of-generation token
/// was sampled, or when [`is_stopped`](Self::is_stopped) (nothing but end-of-generation can follow).
#[derive(Clone)]
pub struct JsonSchemaConstraint {
    vocab: GrammarVocab,
    matcher: Matcher,
    scan: Scan,
    text: Vec<u8>,
    accepting: bool,
    ended: bool,
    /// The allowed set for the current state, once computed.
    allowed: Option<SimpleVob>,
}

impl std::fmt::Debug for JsonSchemaConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaConstraint")
            .field("text", &String::from_utf8_lossy(&self.text))
            .field("complete", &self.accepting)
            .finish()
    }
}

/// A schema given as text or as a parsed value.
pub trait SchemaSource {
    /// The parsed schema.
    fn to_schema(&self) -> Result<Value, GrammarError>;
}

impl SchemaSource for Value {
    fn to_schema(&self) -> Result<Value, GrammarError> {
        Ok(self.clone())
    }
}

impl SchemaSource for str {
    fn to_schema(&self) -> Result<Value, GrammarError> {
        serde_json::from_str(self).map_err(|e| GrammarError::SchemaNotJson(e.to_string()))
    }
}

impl SchemaSource for String {
    fn to_schema(&self) -> Result<Value, GrammarError> {
        self.as_str().to_schema()
    }
}

impl JsonSchemaConstraint {
    /// Checks and compiles `schema` for `tokenizer`'s vocabulary. Builds the vocabulary trie; to
    /// compile several schemas (or one many times) for the same tokenizer, build a
    /// [`GrammarVocab`] once and use [`with_vocab`](Self::with_vocab), or clone a fresh constraint.
    pub fn new<S: SchemaSource + ?Sized>(
        schema: &S,
        tokenizer: &Tokenizer,
    ) -> Result<Self, GrammarError> {
        let schema = schema.to_schema()?;
        schema::prepare(&schema)?;
        Self::with_vocab(&schema, &GrammarVocab::new(tokenizer)?)
    }

    /// Checks and compiles `schema` against a prepared vocabulary.
    pub fn with_vocab<S: SchemaSource + ?Sized>(
        schema: &S,
        vocab: &GrammarVocab,
    ) -> Result<Self, GrammarError> {
        let mut schema = schema::prepare(&schema.to_schema()?)?;
        if let Value::Object(obj) = &mut schema {
            obj.insert(
                "x-guidance".into(),
                serde_json::json!({
                    "whitespace_pattern": format!(r"(\x20|\n\x20{{0,{MAX_INDENT}}})"),
                }),
            );
        }
        let parser = vocab
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(schema))
            .map_err(|e| GrammarError::Compile(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::Compile(e));
        }
        let accepting = matcher
            .is_accepting()
            .map_err(|e| GrammarError::Internal(e.to_string()))?;
        Ok(JsonSchemaConstraint {
            vocab: vocab.clone(),
            matcher,
            scan: Scan::default(),
            text: Vec::new(),
            accepting,
            ended: false,
            allowed: None,
        })
    }

    /// The document so far.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// Whether the document so far is a complete, valid document (end-of-generation is allowed).
    pub fn is_complete(&self) -> bool {
        self.accepting
    }

    /// Whether nothing but end-of-generation can follow (or it was accepted).
    pub fn is_stopped(&self) -> bool {
        self.ended || self.matcher.is_stopped()
    }

    fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    /// The tokens allowed now (a bit per token of the vocabulary).
    pub fn allowed_tokens(&mut self) -> Result<&SimpleVob, GrammarError> {
        if self.allowed.is_none() {
            let set = self.compute_allowed()?;
            self.allowed = Some(set);
        }
        Ok(self.allowed.as_ref().expect("just computed"))
    }

    fn compute_allowed(&mut self) -> Result<SimpleVob, GrammarError> {
        let n = self.vocab.len();
        let mut set = if self.ended {
            SimpleVob::alloc(n)
        } else if self.matcher.is_stopped() && !self.accepting {
            return Err(GrammarError::DeadEnd {
                text: self.text_lossy(),
            });
        } else {
            self.matcher
                .compute_mask_or_eos()
                .map_err(|e| match self.matcher.is_stopped() {
                    true => GrammarError::DeadEnd {
                        text: String::from_utf8_lossy(&self.text).into_owned(),
                    },
                    false => GrammarError::Internal(e.to_string()),
                })?
        };
        for &t in &self.vocab.eog {
            set.set(t as usize, self.accepting && !self.ended);
        }
        // Numbers within their limits: walk the bytes of each allowed token that could touch one.
        let mut over = Vec::new();
        let scan = self.scan;
        set.iter_set_entries(|t| {
            let f = self.vocab.flags[t];
            if f & 1 == 0 || (scan.in_string && f & 2 == 0) {
                return;
            }
            let mut s = scan;
            if !self.vocab.pieces[t].iter().all(|&b| s.push(b)) {
                over.push(t);
            }
        });
        if !over.is_empty() {
            let mut cut = set.clone();
            for &t in &over {
                cut.set(t, false);
            }
            // Never leave nothing (a number bounded by the schema that must still grow).
            if !cut.is_zero() {
                set = cut;
            }
        }
        if set.is_zero() && !self.ended {
            return Err(GrammarError::DeadEnd {
                text: self.text_lossy(),
            });
        }
        Ok(set)
    }

    /// Sets the logits of every token not allowed now to −∞ (also those beyond the vocabulary).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), GrammarError> {
        let set = self.allowed_tokens()?;
        let n = set.len();
        for (t, l) in logits.iter_mut().enumerate() {
            if t >= n || !set.get(t) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past `token`, which must be allowed now. An end-of-generation token ends the
    /// document (it is allowed only when the document is complete).
    pub fn accept(&mut self, token: u32) -> Result<(), GrammarError> {
        let allowed = {
            let set = self.allowed_tokens()?;
            (token as usize) < set.len() && set.get(token as usize)
        };
        if !allowed {
            let piece = self
                .vocab
                .pieces
                .get(token as usize)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            return Err(GrammarError::TokenRejected {
                token,
                piece,
                text: self.text_lossy(),
            });
        }
        self.allowed = None;
        if self.vocab.eog.contains(&token) {
            self.ended = true;
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| GrammarError::Internal(e.to_string()))?;
        let piece = &self.vocab.pieces[token as usize];
        for &b in piece {
            self.scan.push(b);
        }
        self.text.extend_from_slice(piece);
        self.accepting = self
            .matcher
            .is_accepting()
            .map_err(|e| GrammarError::Internal(e.to_string()))?;
        Ok(())
    }
}

/// Generates one document under `constraint` (a fresh one; it is cloned, not advanced): evaluates
/// `prompt` after what `session` holds, then samples at `temperature` (plain softmax sampling, the
/// sampler's generator seeded by `seed`) until the document is complete and an end-of-generation
/// token is drawn, or nothing else can follow. Returns the document's text. More than
/// `max_tokens` tokens is [`GrammarError::Unfinished`]. This is [`Engine::generate`] with
/// [`Generate::with_constraint`](crate::Generate::with_constraint): the same sampling and stopping
/// rules as unconstrained generation.
pub fn generate_json(
    engine: &Engine,
    session: &mut Session,
    prompt: &[u32],
    constraint: &JsonSchemaConstraint,
    temperature: f32,
    seed: u64,
    max_tokens: usize,
) -> Result<String, GrammarError> {
    // Plain softmax sampling at `temperature`: the whole chain off but the temperature.
    let sampler = SamplerConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerConfig::default()
    };
    let params = GenerationParams {
        max_tokens,
        sampler,
        stop: Vec::new(),
        seed: Some(seed),
        top_logprobs: 0,
    };
    let generation = engine
        .generate(session, prompt, params)?
        .with_constraint(constraint.clone())
        .finish()
        .map_err(|e| match e {
            EngineError::Constraint(g) => *g,
            e => GrammarError::Engine(e),
        })?;
    match generation.finish_reason {
        FinishReason::EndOfGeneration => Ok(generation.text),
        FinishReason::Length | FinishReason::ContextFull | FinishReason::Stop => {
            Err(GrammarError::Unfinished {
                max_tokens,
                text: generation.text,
            })
        }
    }
}
