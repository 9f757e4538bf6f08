//! HF `tokenizer.json` → llama.cpp `tokenizer.ggml.*` metadata.
//!
//! Reproduces what llama.cpp's `convert_hf_to_gguf.py` writes, so that llama.cpp tokenizes our
//! GGUFs exactly like the HF tokenizer:
//!
//! * byte-level BPE (a `ByteLevel` pre-tokenizer) → `tokenizer.ggml.model = "gpt2"` with tokens,
//!   token types and merges; `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer regex set, which
//!   the Python converter finds by hashing a tokenization and we find from the pre-tokenizer
//!   structure (an explicit `pre` override covers the rest);
//! * SentencePiece-style vocabularies (BPE on `▁`-words, or Unigram) → `"llama"` with tokens,
//!   scores and types (`6` for `<0xXX>` byte-fallback tokens). For BPE the score of a token is
//!   minus the rank of the merge that creates it, so llama.cpp's score-driven merging follows the
//!   BPE merge order.
//!
//! Special-token ids, `add_bos/add_eos` and the chat template follow gguf-py's `SpecialVocab`:
//! `tokenizer_config.json` first, then `config.json`'s `*_token_id`.

use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::value::{Array, Value};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    /// Ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// Special/control token (never produced from text by the pre-tokenizer).
    pub const CONTROL: i32 = 3;
    /// User-defined added token (matched verbatim in text), and vocabulary padding.
    pub const USER_DEFINED: i32 = 4;
    /// Unused slot.
    pub const UNUSED: i32 = 5;
    /// Byte-fallback token `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// Options for [`export`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The model's vocabulary size (`config.json` `vocab_size`): the token list is padded with
    /// `[PAD{i}]` up to it, or cut to it, as llama.cpp's converter does.
    pub vocab_size: Option<usize>,
    /// Force `tokenizer.ggml.pre` instead of detecting it.
    pub pre: Option<String>,
    /// Contents of the model's `config.json`, for `bos_token_id`, `eos_token_id`, ….
    pub config_json: Option<String>,
}

/// Reads `tokenizer.json`, and `tokenizer_config.json` / `config.json` when present, from `dir`.
/// `vocab_size` defaults to `config.json`'s `vocab_size`.
pub fn export_dir(dir: &Path, pre: Option<&str>) -> Result<Vec<(String, Value)>> {
    let read = |name: &str| -> Result<Option<String>> {
        let p = dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    };
    let tok = read("tokenizer.json")?.ok_or_else(|| Error::Io {
        path: dir.join("tokenizer.json"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let tok_cfg = read("tokenizer_config.json")?;
    let config = read("config.json")?;
    let vocab_size = match &config {
        Some(c) => parse_json(c, "config.json")?
            .get("vocab_size")
            .and_then(Json::as_u64)
            .and_then(|v| usize::try_from(v).ok()),
        None => None,
    };
    let opts = ExportOptions {
        vocab_size,
        pre: pre.map(str::to_string),
        config_json: config,
    };
    export(&tok, tok_cfg.as_deref(), &opts)
}

fn parse_json(s: &str, what: &str) -> Result<Json> {
    serde_json::from_str(s).map_err(|e| Error::Tokenizer(format!("{what}: {e}")))
}

struct Added {
    id: usize,
    content: String,
    special: bool,
}

/// Produces the `tokenizer.ggml.*` (and `tokenizer.chat_template`) metadata, in llama.cpp's order.
pub fn export(
    tokenizer_json: &str,
    tokenizer_config_json: Option<&str>,
    opts: &ExportOptions,
) -> Result<Vec<(String, Value)>> {
    let tok = parse_json(tokenizer_json, "tokenizer.json")?;
    let cfg = tokenizer_config_json
        .map(|s| parse_json(s, "tokenizer_config.json"))
        .transpose()?;
    let config = opts
        .config_json
        .as_deref()
        .map(|s| parse_json(s, "config.json"))
        .transpose()?;

    let model = tok
        .get("model")
        .ok_or_else(|| Error::Tokenizer("tokenizer.json has no `model`".into()))?;
    let model_type = model.get("type").and_then(Json::as_str).unwrap_or("");
    let added = added_tokens(&tok)?;

    // id -> (text, score)
    let mut base: Vec<Option<(String, f32)>> = Vec::new();
    let mut merges: Vec<(String, String)> = Vec::new();
    match model_type {
        "BPE" => {
            let vocab = model
                .get("vocab")
                .and_then(Json::as_object)
                .ok_or_else(|| Error::Tokenizer("BPE model without a vocab map".into()))?;
            for (t, id) in vocab {
                let id = id
                    .as_u64()
                    .ok_or_else(|| Error::Tokenizer(format!("token {t:?} has a non-integer id")))?;
                put(&mut base, id as usize, t.clone(), 0.0)?;
            }
            merges = read_merges(model)?;
        }
        "Unigram" => {
            let vocab = model
                .get("vocab")
                .and_then(Json::as_array)
                .ok_or_else(|| Error::Tokenizer("Unigram model without a vocab list".into()))?;
            for (id, e) in vocab.iter().enumerate() {
                let t = e.get(0).and_then(Json::as_str);
                let s = e.get(1).and_then(Json::as_f64);
                match (t, s) {
                    (Some(t), Some(s)) => put(&mut base, id, t.to_string(), s as f32)?,
                    _ => return Err(Error::Tokenizer(format!("bad Unigram vocab entry {id}"))),
                }
            }
        }
        other => {
            return Err(Error::Tokenizer(format!(
                "tokenizer model type {other:?} is not supported (BPE and Unigram are)"
            )))
        }
    }
    for a in &added {
        let keep = base.get(a.id).and_then(|s| s.as_ref()).map(|s| s.1);
        put(&mut base, a.id, a.content.clone(), keep.unwrap_or(0.0))?;
    }
    let n_vocab = opts.vocab_size.unwrap_or(base.len());

    let pre_tok = tok.get("pre_tokenizer").unwrap_or(&Json::Null);
    let byte_level = model_type == "BPE" && contains_type(pre_tok, "ByteLevel");
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let unk_text = model.get("unk_token").and_then(Json::as_str);

    let mut out: Vec<(String, Value)> = Vec::new();
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    let mut scores = Vec::with_capacity(n_vocab);

    // Merge-rank scores for SentencePiece-style BPE.
    let mut rank_score: std::collections::HashMap<String, f32> = std::collections::HashMap::new();
    if !byte_level {
        for (i, (a, b)) in merges.iter().enumerate() {
            rank_score
                .entry(format!("{a}{b}"))
                .or_insert(-((i + 1) as f32));
        }
    }

    for i in 0..n_vocab {
        let Some((text, score)) = base.get(i).and_then(|s| s.clone()) else {
            tokens.push(format!("[PAD{i}]"));
            types.push(token_type::USER_DEFINED);
            scores.push(-1000.0);
            continue;
        };
        let added_tok = added.iter().find(|a| a.id == i);
        let (text, ty) = if byte_level {
            match added_tok {
                Some(a) if a.special || looks_special(&text) => (text, token_type::CONTROL),
                Some(_) => (text.replace('\u{2581}', " "), token_type::USER_DEFINED),
                None => (text, token_type::NORMAL),
            }
        } else {
            let ty = if Some(text.as_str()) == unk_text {
                token_type::UNKNOWN
            } else if let Some(a) = added_tok {
                if a.special {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                }
            } else if byte_fallback && is_byte_token(&text) {
                token_type::BYTE
            } else {
                token_type::NORMAL
            };
            (text, ty)
        };
        let score = if model_type == "BPE" {
            rank_score.get(&text).copied().unwrap_or(0.0)
        } else {
            score
        };
        tokens.push(text);
        types.push(ty);
        scores.push(score);
    }

    let s = |k: &str| format!("tokenizer.ggml.{k}");
    if byte_level {
        let pre = match &opts.pre {
            Some(p) => p.clone(),
            None => detect_pre(pre_tok)?,
        };
        out.push((s("model"), Value::String("gpt2".into())));
        out.push((s("pre"), Value::String(pre)));
        out.push((s("tokens"), Value::Array(Array::String(tokens))));
        out.push((s("token_type"), Value::Array(Array::I32(types))));
        let m = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
        out.push((s("merges"), Value::Array(Array::String(m))));
    } else {
        out.push((s("model"), Value::String("llama".into())));
        out.push((
            s("pre"),
            Value::String(opts.pre.clone().unwrap_or_else(|| "default".into())),
        ));
        out.push((s("tokens"), Value::Array(Array::String(tokens))));
        out.push((s("scores"), Value::Array(Array::F32(scores))));
        out.push((s("token_type"), Value::Array(Array::I32(types))));
    }

    let mut special = special_tokens(
        &tok,
        cfg.as_ref(),
        config.as_ref(),
        &added,
        unk_text,
        n_vocab,
    )?;
    // gguf-py's writer order: bos, eos, unk, sep, pad, cls, mask — whatever file supplied them.
    special.ids.sort_by_key(|(t, _)| {
        SPECIAL_TYPES
            .iter()
            .position(|s| s == t)
            .unwrap_or(usize::MAX)
    });
    for (typ, id) in &special.ids {
        let key = match *typ {
            "bos" => "bos_token_id",
            "eos" => "eos_token_id",
            "unk" => "unknown_token_id",
            "sep" => "seperator_token_id",
            "pad" => "padding_token_id",
            "cls" => "cls_token_id",
            "mask" => "mask_token_id",
            "eot" => "eot_token_id",
            _ => continue,
        };
        out.push((s(key), Value::U32(*id)));
    }
    let mut add = special.add.clone();
    if !byte_level {
        for typ in ["bos", "eos"] {
            if !add.iter().any(|(t, _)| *t == typ) {
                add.push((typ, false));
            }
        }
    }
    for (typ, v) in add {
        out.push((s(&format!("add_{typ}_token")), Value::Bool(v)));
    }
    if !byte_level {
        out.push((s("add_space_prefix"), Value::Bool(adds_space_prefix(&tok))));
    }
    if let Some(ct) = cfg.as_ref().and_then(|c| c.get("chat_template")) {
        match ct {
            Json::String(t) => {
                out.push(("tokenizer.chat_template".into(), Value::String(t.clone())))
            }
            Json::Array(list) => {
                let mut names = Vec::new();
                for e in list {
                    let (Some(name), Some(t)) = (
                        e.get("name").and_then(Json::as_str),
                        e.get("template").and_then(Json::as_str),
                    ) else {
                        continue;
                    };
                    if name == "default" {
                        out.push(("tokenizer.chat_template".into(), Value::String(t.into())));
                    } else {
                        out.push((
                            format!("tokenizer.chat_template.{name}"),
                            Value::String(t.into()),
                        ));
                        names.push(name.to_string());
                    }
                }
                if !names.is_empty() {
                    out.push((
                        "tokenizer.chat_templates".into(),
                        Value::Array(Array::String(names)),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Stores token `id`, growing the table (ids are bounded to keep hostile JSON from exhausting memory).
fn put(base: &mut Vec<Option<(String, f32)>>, id: usize, text: String, score: f32) -> Result<()> {
    if id > 16_000_000 {
        return Err(Error::Tokenizer(format!(
            "token id {id} is implausibly large"
        )));
    }
    if base.len() <= id {
        base.resize(id + 1, None);
    }
    if let Some(slot) = base.get_mut(id) {
        *slot = Some((text, score));
    }
    Ok(())
}

fn added_tokens(tok: &Json) -> Result<Vec<Added>> {
    let mut v = Vec::new();
    for a in tok
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let id = a.get("id").and_then(Json::as_u64);
        let content = a.get("content").and_then(Json::as_str);
        match (id, content) {
            (Some(id), Some(c)) => v.push(Added {
                id: id as usize,
                content: c.to_string(),
                special: a.get("special").and_then(Json::as_bool).unwrap_or(false),
            }),
            _ => return Err(Error::Tokenizer("malformed entry in added_tokens".into())),
        }
    }
    Ok(v)
}

fn read_merges(model: &Json) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for m in model
        .get("merges")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        match m {
            Json::String(s) => {
                let (a, b) = s
                    .split_once(' ')
                    .ok_or_else(|| Error::Tokenizer(format!("merge {s:?} has no space")))?;
                out.push((a.to_string(), b.to_string()));
            }
            Json::Array(p) => match (
                p.first().and_then(Json::as_str),
                p.get(1).and_then(Json::as_str),
            ) {
                // Pair format (transformers >= 4.45): spaces inside a part are encoded as U+0120,
                // exactly as gguf-py does, so the "a b" string form stays unambiguous.
                (Some(a), Some(b)) if p.len() == 2 => {
                    out.push((a.replace(' ', "\u{120}"), b.replace(' ', "\u{120}")))
                }
                _ => return Err(Error::Tokenizer("unknown merges format".into())),
            },
            _ => return Err(Error::Tokenizer("unknown merges format".into())),
        }
    }
    Ok(out)
}

/// Whether a JSON pre-tokenizer tree contains a component of type `t`.
fn contains_type(j: &Json, t: &str) -> bool {
    if j.get("type").and_then(Json::as_str) == Some(t) {
        return true;
    }
    j.get("pretokenizers")
        .and_then(Json::as_array)
        .is_some_and(|v| v.iter().any(|x| contains_type(x, t)))
}

/// The contraction-free tail of the Llama-3 split regex (digits in runs of up to 3).
const LLAMA3_TAIL: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The contraction-free tail of the Qwen2 split regex (single digits).
const QWEN2_TAIL: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_regex(j: &Json) -> Option<&str> {
    if j.get("type").and_then(Json::as_str) != Some("Split") {
        return None;
    }
    j.get("pattern")?.get("Regex")?.as_str()
}

/// Maps a byte-level pre-tokenizer to llama.cpp's `tokenizer.ggml.pre` name.
pub fn detect_pre(pre_tok: &Json) -> Result<String> {
    let parts: Vec<&Json> = match pre_tok.get("type").and_then(Json::as_str) {
        Some("Sequence") => pre_tok
            .get("pretokenizers")
            .and_then(Json::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
        Some(_) => vec![pre_tok],
        None => vec![],
    };
    let ty = |j: &Json| {
        j.get("type")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string()
    };
    let bl_regex = |j: &Json| j.get("use_regex").and_then(Json::as_bool).unwrap_or(true);
    let types: Vec<String> = parts.iter().map(|j| ty(j)).collect();
    let found = match types
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["ByteLevel"] if parts.first().is_some_and(|j| bl_regex(j)) => Some("gpt-2"),
        ["Digits", "ByteLevel"]
            if parts
                .first()
                .and_then(|j| j.get("individual_digits"))
                .and_then(Json::as_bool)
                == Some(true)
                && parts.get(1).is_some_and(|j| bl_regex(j)) =>
        {
            Some("smollm")
        }
        ["Split", "ByteLevel"] if parts.get(1).is_some_and(|j| !bl_regex(j)) => {
            let re = parts.first().and_then(|j| split_regex(j)).unwrap_or("");
            let tail = re.split_once(")|").map(|(_, t)| t).unwrap_or("");
            let contractions_ok = re.starts_with("(?i:'s|'t|'re|'ve|'m|'ll|'d)")
                || re.starts_with("(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])");
            match tail {
                LLAMA3_TAIL if contractions_ok => Some("llama-bpe"),
                QWEN2_TAIL if contractions_ok => Some("qwen2"),
                _ => None,
            }
        }
        _ => None,
    };
    found.map(str::to_string).ok_or_else(|| {
        let mut d = pre_tok.to_string();
        if d.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|&i| d.is_char_boundary(i))
                .unwrap_or(0);
            d.truncate(cut);
            d.push('…');
        }
        Error::UnknownPreTokenizer(d)
    })
}

/// gguf-py's heuristic for added tokens that behave as control tokens even if not flagged.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// Whether the normalizer / pre-tokenizer prepends `▁` to the input (SentencePiece `add_dummy_prefix`).
fn adds_space_prefix(tok: &Json) -> bool {
    fn walk(j: &Json) -> bool {
        match j.get("type").and_then(Json::as_str) {
            Some("Prepend") => j.get("prepend").and_then(Json::as_str) == Some("\u{2581}"),
            Some("Metaspace") => match j.get("prepend_scheme").and_then(Json::as_str) {
                Some(s) => s != "never",
                None => j
                    .get("add_prefix_space")
                    .and_then(Json::as_bool)
                    .unwrap_or(true),
            },
            Some("Sequence") => ["normalizers", "pretokenizers"]
                .iter()
                .filter_map(|k| j.get(*k).and_then(Json::as_array))
                .flatten()
                .any(walk),
            _ => false,
        }
    }
    walk(tok.get("normalizer").unwrap_or(&Json::Null))
        || walk(tok.get("pre_tokenizer").unwrap_or(&Json::Null))
}

#[derive(Default)]
struct Special {
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
}

impl Special {
    fn set_id(&mut self, typ: &'static str, id: Option<u64>, n_vocab: usize) {
        let Some(id) = id else { return };
        if self.ids.iter().any(|(t, _)| *t == typ) || id as usize >= n_vocab {
            return;
        }
        if let Ok(id) = u32::try_from(id) {
            self.ids.push((typ, id));
        }
    }
    fn set_add(&mut self, typ: &'static str, v: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some(e) => e.1 = v,
            None => self.add.push((typ, v)),
        }
    }
}

const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

fn token_content(j: Option<&Json>) -> Option<String> {
    match j? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn special_tokens(
    tok: &Json,
    cfg: Option<&Json>,
    config: Option<&Json>,
    added: &[Added],
    unk_text: Option<&str>,
    n_vocab: usize,
) -> Result<Special> {
    let mut sp = Special::default();
    let cfg_tok =
        |typ: &str| cfg.and_then(|c| token_content(c.get(format!("{typ}_token").as_str())));
    let mut bos = cfg_tok("bos").or_else(|| cfg_tok("cls"));
    let mut eos = cfg_tok("eos").or_else(|| cfg_tok("sep"));

    // Post-processor: decides add_bos/add_eos when tokenizer_config does not.
    if let Some(pp) = tok.get("post_processor").filter(|p| !p.is_null()) {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(v) => v.iter().collect(),
            None => vec![pp],
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("RobertaProcessing") => {
                    sp.set_add("bos", true);
                    sp.set_add("eos", true);
                    sp.set_add("sep", true);
                }
                Some("TemplateProcessing") => {
                    let single = p
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    if single.len() > 1 {
                        let sid = |j: Option<&Json>| {
                            j.and_then(|j| j.get("SpecialToken"))
                                .and_then(|s| s.get("id"))
                                .and_then(Json::as_str)
                                .map(str::to_string)
                        };
                        if let Some(first) = sid(single.first()) {
                            if cfg.is_none() {
                                bos = Some(first.clone());
                            }
                            let is_bos = Some(&first) == bos.as_ref()
                                || Some(&first) == cfg_tok("cls").as_ref();
                            sp.set_add("bos", is_bos);
                        }
                        if let Some(last) = sid(single.last()) {
                            // gguf-py makes a trailing special token the EOS it adds.
                            eos = Some(last);
                            sp.set_add("eos", true);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let lookup = |content: &str| {
        added
            .iter()
            .find(|a| a.content == content)
            .map(|a| a.id as u64)
    };
    if let Some(cfg) = cfg {
        for typ in SPECIAL_TYPES {
            if let Some(b) = cfg
                .get(format!("add_{typ}_token").as_str())
                .and_then(Json::as_bool)
            {
                sp.set_add(typ, b);
            }
            let content = match typ {
                "bos" => bos.clone(),
                "eos" => eos.clone(),
                t => cfg_tok(t),
            };
            if let Some(c) = content {
                sp.set_id(typ, lookup(&c), n_vocab);
            }
        }
    } else if let Some(b) = &bos {
        sp.set_id("bos", lookup(b), n_vocab);
    }
    if let Some(config) = config {
        for typ in SPECIAL_TYPES {
            let key = format!("{typ}_token_id");
            let id = config
                .get(key.as_str())
                .or_else(|| config.get("text_config").and_then(|t| t.get(key.as_str())));
            // eos_token_id may be a list; gguf-py only takes plain integers.
            sp.set_id(typ, id.and_then(Json::as_u64), n_vocab);
        }
    }
    // The model's own unknown token, when nothing else named one.
    if let Some(u) = unk_text {
        let vocab_id = tok
            .get("model")
            .and_then(|m| m.get("vocab"))
            .and_then(|v| v.get(u))
            .and_then(Json::as_u64);
        sp.set_id("unk", lookup(u).or(vocab_id), n_vocab);
    }
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detects_known_pre_tokenizers() {
        let bl = |r: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": r});
        assert_eq!(detect_pre(&bl(true)).ok().as_deref(), Some("gpt-2"));
        let smol = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, bl(true)]});
        assert_eq!(detect_pre(&smol).ok().as_deref(), Some("smollm"));
        let split = |re: &str| {
            json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            bl(false)]})
        };
        let l3 = format!("(?i:'s|'t|'re|'ve|'m|'ll|'d)|{LLAMA3_TAIL}");
        let q2 = format!("(?i:'s|'t|'re|'ve|'m|'ll|'d)|{QWEN2_TAIL}");
        assert_eq!(detect_pre(&split(&l3)).ok().as_deref(), Some("llama-bpe"));
        assert_eq!(detect_pre(&split(&q2)).ok().as_deref(), Some("qwen2"));
        assert!(matches!(
            detect_pre(&split("x")),
            Err(Error::UnknownPreTokenizer(_))
        ));
        assert!(matches!(
            detect_pre(&Json::Null),
            Err(Error::UnknownPreTokenizer(_))
        ));
    }

    #[test]
    fn unknown_pre_can_be_overridden_and_vocab_is_padded() {
        let tj = json!({
            "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": true},
                             {"id": 4, "content": "hello", "special": false}],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "odd"}}, {"type": "ByteLevel", "use_regex": false}]},
            "post_processor": null,
            "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3},
                      "merges": [["a", "b"]]}
        })
        .to_string();
        assert!(matches!(
            export(&tj, None, &ExportOptions::default()),
            Err(Error::UnknownPreTokenizer(_))
        ));
        let opts = ExportOptions {
            vocab_size: Some(7),
            pre: Some("custom".into()),
            config_json: None,
        };
        let m = export(&tj, None, &opts).unwrap_or_default();
        let get = |k: &str| m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("tokenizer.ggml.pre"),
            Some(Value::String("custom".into()))
        );
        let toks = get("tokenizer.ggml.tokens");
        assert_eq!(
            toks.as_ref()
                .and_then(Value::as_string_array)
                .map(|t| t.to_vec()),
            Some(
                vec!["<|endoftext|>", "a", "b", "ab", "hello", "[PAD5]", "[PAD6]"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        assert_eq!(
            get("tokenizer.ggml.token_type"),
            Some(Value::Array(Array::I32(vec![3, 1, 1, 1, 4, 4, 4])))
        );
        assert_eq!(
            get("tokenizer.ggml.merges"),
            Some(Value::Array(Array::String(vec!["a b".into()])))
        );
    }

    #[test]
    fn sentencepiece_style_vocab_types_and_scores() {
        let tj = json!({
            "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                             {"id": 1, "content": "<s>", "special": true}],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "post_processor": {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
            "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
                      "vocab": {"<unk>": 0, "<s>": 1, "<0x0A>": 2, "\u{2581}": 3, "a": 4, "\u{2581}a": 5},
                      "merges": ["\u{2581} a"]}
        })
        .to_string();
        let cfg = json!({"bos_token": "<s>", "unk_token": "<unk>"}).to_string();
        let m = export(&tj, Some(&cfg), &ExportOptions::default()).unwrap_or_default();
        let get = |k: &str| m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("tokenizer.ggml.model"),
            Some(Value::String("llama".into()))
        );
        assert_eq!(
            get("tokenizer.ggml.token_type"),
            Some(Value::Array(Array::I32(vec![2, 3, 6, 1, 1, 1])))
        );
        assert_eq!(
            get("tokenizer.ggml.scores"),
            Some(Value::Array(Array::F32(vec![
                0.0, 0.0, 0.0, 0.0, 0.0, -1.0
            ])))
        );
        assert_eq!(get("tokenizer.ggml.bos_token_id"), Some(Value::U32(1)));
        assert_eq!(get("tokenizer.ggml.unknown_token_id"), Some(Value::U32(0)));
        assert_eq!(get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        assert_eq!(
            get("tokenizer.ggml.add_space_prefix"),
            Some(Value::Bool(true))
        );
    }
}
