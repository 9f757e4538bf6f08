//! Special-token ids, `add_*_token` flags, merges, chat templates and normalizer flags, read as
//! gguf-py's `SpecialVocab` reads them.
//!
//! Every vocabulary writer of llama.cpp's converter ends with this reader, so its rules decide what
//! llama.cpp does with BOS/EOS at run time. In order: `tokenizer.json` (merges, normalizer flags,
//! the post-processor's BOS/EOS/SEP handling), then `tokenizer_config.json` (chat template,
//! `add_*_token`, and each `*_token` looked up among `tokenizer.json`'s added tokens), then
//! `config.json`'s `*_token_id`. The first id found for a type wins; ids are written in the order
//! they were found. The Python reader tests JSON values for truth (`""`, `{}`, `null` count as
//! absent) and compares them for equality whatever their type; [`truthy`] and plain JSON equality
//! do the same here.

use serde_json::{Map, Value as Json};

use super::files::TokenizerFiles;
use super::kv::Kv;
use crate::error::Result;
use crate::value::{Array, Value};

/// The special-token types gguf-py reads by default, in its order.
pub(crate) const DEFAULT_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// Python's truth value of a JSON value.
pub(crate) fn truthy(j: &Json) -> bool {
    match j {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

fn is_truthy(j: Option<&Json>) -> bool {
    j.is_some_and(truthy)
}

/// The GGUF key of a special-token id type; types without one are skipped, as gguf-py does.
fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

/// The GGUF key of an `add_*_token` flag; other flags are skipped, as gguf-py does.
fn add_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

/// What gguf-py's `SpecialVocab` collects from a folder.
#[derive(Debug, Default)]
pub(crate) struct SpecialVocab {
    types: Vec<&'static str>,
    n_vocab: Option<usize>,
    load_merges: bool,
    pub(crate) merges: Vec<String>,
    /// Ids in the order they were found.
    pub(crate) ids: Vec<(&'static str, u32)>,
    /// `add_*_token` flags in the order they were first set.
    pub(crate) add: Vec<(&'static str, bool)>,
    chat_template: Option<Json>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
}

impl SpecialVocab {
    /// Reads the folder's files. `types` defaults to [`DEFAULT_TYPES`]; ids at or above `n_vocab`
    /// are dropped.
    pub(crate) fn load(
        files: &TokenizerFiles,
        load_merges: bool,
        types: Option<&[&'static str]>,
        n_vocab: Option<usize>,
    ) -> Result<Self> {
        let mut sv = Self {
            types: types.unwrap_or(&DEFAULT_TYPES).to_vec(),
            n_vocab,
            load_merges,
            ..Self::default()
        };
        sv.read_tokenizer_files(files)?;
        sv.read_config_json(files)?;
        if sv.load_merges && sv.merges.is_empty() {
            if let Some(text) = &files.merges_txt {
                sv.merges = merges_txt(text);
            }
        }
        Ok(sv)
    }

    /// Records `id` for `typ` unless one is already known or it is out of range; non-integers are
    /// ignored and negative ids refused, as gguf-py does.
    pub(crate) fn set_id(
        &mut self,
        files: &TokenizerFiles,
        file: &str,
        typ: &'static str,
        id: Option<&Json>,
    ) -> Result<()> {
        let Some(id) = id else { return Ok(()) };
        // Python's `isinstance(x, int)` also accepts booleans.
        let id = match id {
            Json::Bool(b) => i64::from(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => i,
                None if n.is_u64() => {
                    return Err(files.field_error(file, typ, format!("token id {n} is too large")))
                }
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let Ok(id) = u32::try_from(id) else {
            return Err(files.field_error(file, typ, format!("invalid token id {id}")));
        };
        if self.n_vocab.is_some_and(|n| id as usize >= n) || self.ids.iter().any(|(t, _)| *t == typ)
        {
            return Ok(());
        }
        self.ids.push((typ, id));
        Ok(())
    }

    /// Sets an `add_*_token` flag, keeping its first position.
    pub(crate) fn set_add(&mut self, typ: &'static str, value: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some(slot) => slot.1 = value,
            None => self.add.push((typ, value)),
        }
    }

    fn add_default(&mut self, typ: &'static str, value: bool) {
        if !self.add.iter().any(|(t, _)| *t == typ) {
            self.add.push((typ, value));
        }
    }

    fn add_type(&mut self, typ: &'static str) {
        if !self.types.contains(&typ) {
            self.types.push(typ);
        }
    }

    fn read_tokenizer_files(&mut self, files: &TokenizerFiles) -> Result<()> {
        let tok = files
            .tokenizer_json
            .as_ref()
            .filter(|t| truthy(t))
            .and_then(Json::as_object);
        if let Some(tok) = tok {
            if self.load_merges {
                self.merges = json_merges(files, tok)?;
            }
            if let Some(n) = tok.get("normalizer").filter(|n| truthy(n)) {
                self.parse_normalizer(n);
            }
        }
        let empty = Vec::new();
        let added = tok
            .and_then(|t| t.get("added_tokens"))
            .and_then(Json::as_array)
            .unwrap_or(&empty);
        let mut cfg: Option<Map<String, Json>> = files.tokenizer_config_object().cloned();
        if let Some(tok) = tok {
            self.post_processor(tok, &mut cfg);
        }
        let Some(cfg) = cfg else { return Ok(()) };
        self.chat_template(files, &cfg);
        for typ in self.types.clone() {
            if let Some(b) = cfg.get(&format!("add_{typ}_token")).and_then(Json::as_bool) {
                self.add_default(typ, b);
            }
            let content = match cfg.get(&format!("{typ}_token")) {
                Some(Json::String(s)) => s.as_str(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added
                .iter()
                .find(|a| a.get("content").and_then(Json::as_str) == Some(content))
                .and_then(|a| a.get("id"));
            self.set_id(files, "tokenizer.json", typ, id)?;
        }
        Ok(())
    }

    /// The post-processor's say on BOS/EOS/SEP, which may also name the special tokens when
    /// `tokenizer_config.json` does not.
    fn post_processor(&mut self, tok: &Map<String, Json>, cfg: &mut Option<Map<String, Json>>) {
        let get =
            |cfg: &Option<Map<String, Json>>, k: &str| cfg.as_ref().and_then(|c| c.get(k)).cloned();
        let mut bos = get(cfg, "bos_token");
        let mut cls = get(cfg, "cls_token");
        let mut eos = get(cfg, "eos_token");
        let mut sep = get(cfg, "sep_token");
        if !is_truthy(bos.as_ref()) && is_truthy(cls.as_ref()) {
            if let Some(c) = cfg.as_mut() {
                c.insert("bos_token".into(), cls.clone().unwrap_or_default());
                bos.clone_from(&cls);
            }
        }
        if !is_truthy(eos.as_ref()) && is_truthy(sep.as_ref()) {
            if let Some(c) = cfg.as_mut() {
                c.insert("eos_token".into(), sep.clone().unwrap_or_default());
                eos.clone_from(&sep);
            }
        }
        let Some(pp) = tok.get("post_processor").filter(|p| truthy(p)) else {
            return;
        };
        let single = [pp.clone()];
        let procs = match pp.get("processors").and_then(Json::as_array) {
            Some(list) => list.as_slice(),
            None => &single,
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    self.add_default("bos", false);
                    self.add_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.set_add("bos", true);
                    self.set_add("eos", true);
                    self.set_add("sep", true);
                    if let Some(c) = cfg.as_mut() {
                        if !is_truthy(cls.as_ref()) {
                            cls = first_of(p.get("cls")).or_else(|| bos.clone());
                            c.insert("cls_token".into(), cls.clone().unwrap_or_default());
                        }
                        if !is_truthy(sep.as_ref()) {
                            sep = first_of(p.get("sep")).or_else(|| eos.clone());
                            c.insert("sep_token".into(), sep.clone().unwrap_or_default());
                        }
                    }
                }
                Some("TemplateProcessing") => {
                    let mut names = Names {
                        bos: &mut bos,
                        cls: &mut cls,
                        eos: &mut eos,
                        sep: &sep,
                    };
                    self.template_processing(p, cfg, &mut names);
                }
                _ => {}
            }
        }
    }

    /// `TemplateProcessing`: a leading special token is the BOS that is added, a trailing one the
    /// EOS (the one named before becomes the EOT, or EOM), and a special token between `$A` and
    /// `$B` of the pair template means a separator is added.
    fn template_processing(
        &mut self,
        p: &Json,
        cfg: &mut Option<Map<String, Json>>,
        names: &mut Names<'_>,
    ) {
        let empty = Vec::new();
        let single = p.get("single").and_then(Json::as_array).unwrap_or(&empty);
        let pair = p.get("pair").and_then(Json::as_array).unwrap_or(&empty);
        let mut first = None;
        let mut last = None;
        if single.len() > 1 {
            first = special_id(single.first()).filter(|s| !s.is_empty());
            if let Some(f) = &first {
                let fj = Json::String(f.clone());
                match cfg.as_mut() {
                    None => *names.bos = Some(fj.clone()),
                    Some(c)
                        if names.bos.as_ref() != Some(&fj) && names.cls.as_ref() != Some(&fj) =>
                    {
                        if !is_truthy(names.bos.as_ref()) {
                            c.insert("bos_token".into(), fj.clone());
                            *names.bos = Some(fj.clone());
                        }
                        if !is_truthy(names.cls.as_ref()) {
                            c.insert("cls_token".into(), fj.clone());
                            *names.cls = Some(fj.clone());
                        }
                    }
                    Some(_) => {}
                }
                let is_bos = names.bos.as_ref() == Some(&fj) || names.cls.as_ref() == Some(&fj);
                self.set_add("bos", is_bos);
            }
            last = special_id(single.last()).filter(|s| !s.is_empty());
            if let Some(l) = &last {
                let lj = Json::String(l.clone());
                match cfg.as_mut() {
                    None => *names.eos = Some(lj.clone()),
                    Some(c) if names.eos.as_ref() != Some(&lj) => {
                        let old = names.eos.clone().unwrap_or_default();
                        if !self.types.contains(&"eot") {
                            self.add_type("eot");
                            c.insert("eot_token".into(), old);
                        } else if !self.types.contains(&"eom") {
                            self.add_type("eom");
                            c.insert("eom_token".into(), old);
                        }
                        c.insert("eos_token".into(), lj.clone());
                        *names.eos = Some(lj.clone());
                    }
                    Some(_) => {}
                }
                let is_eos = names.eos.as_ref() == Some(&lj);
                self.set_add("eos", is_eos);
            }
        }
        if pair.is_empty() {
            return;
        }
        let starts = first.is_some() && special_id(pair.first()) == first;
        let stops = last.is_some() && special_id(pair.last()) == last;
        let lo = usize::from(starts);
        let hi = pair.len().saturating_sub(usize::from(stops));
        let inner = pair.get(lo..hi).unwrap_or(&[]);
        let (Some(a), Some(b)) = (inner.first(), inner.last()) else {
            return;
        };
        let seq = |j: &Json| {
            j.get("Sequence")
                .and_then(|s| s.get("id"))
                .and_then(Json::as_str)
                .map(str::to_string)
        };
        if seq(a).as_deref() != Some("A") || seq(b).as_deref() != Some("B") || inner.len() < 3 {
            return;
        }
        let middle = &inner[1..inner.len() - 1];
        let is_sep_or_eos = |s: &str| {
            let sj = Json::String(s.to_string());
            names.sep.as_ref() == Some(&sj) || names.eos.as_ref() == Some(&sj)
        };
        let mut add_sep = false;
        if let Some(s) = special_id(middle.first()).filter(|s| !s.is_empty()) {
            if is_sep_or_eos(&s) && last.is_none() {
                add_sep = true;
            }
        }
        if middle.len() == 2 {
            if let Some(s) = special_id(middle.get(1)).filter(|s| !s.is_empty()) {
                if is_sep_or_eos(&s) {
                    add_sep = true;
                }
            }
        }
        self.set_add("sep", add_sep);
        if add_sep && !is_truthy(names.sep.as_ref()) {
            if let Some(c) = cfg.as_mut() {
                c.insert("sep_token".into(), names.eos.clone().unwrap_or_default());
            }
        }
    }

    fn parse_normalizer(&mut self, n: &Json) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                for m in n
                    .get("normalizers")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.parse_normalizer(m);
                }
            }
            _ => {}
        }
    }

    /// `tokenizer_config.json`'s `chat_template`, else `chat_template.jinja` (with the
    /// `additional_chat_templates/`), else `chat_template.json`.
    fn chat_template(&mut self, files: &TokenizerFiles, cfg: &Map<String, Json>) {
        let alt = if let Some(t) = &files.chat_template_jinja {
            if files.additional_chat_templates.is_empty() {
                Some(Json::String(t.clone()))
            } else {
                let mut list = vec![serde_json::json!({"name": "default", "template": t})];
                for (name, text) in &files.additional_chat_templates {
                    list.push(serde_json::json!({"name": name, "template": text}));
                }
                Some(Json::Array(list))
            }
        } else {
            files
                .chat_template_json
                .as_ref()
                .and_then(|j| j.get("chat_template"))
                .cloned()
        };
        let template = match cfg.get("chat_template") {
            Some(t) => Some(t.clone()),
            None => alt,
        };
        self.chat_template = template.filter(|t| t.is_string() || t.is_array());
    }

    fn read_config_json(&mut self, files: &TokenizerFiles) -> Result<()> {
        let Some(config) = files.config.as_ref() else {
            return Ok(());
        };
        for typ in self.types.clone() {
            let key = format!("{typ}_token_id");
            let id = match config.get(&key).filter(|v| !v.is_null()) {
                Some(v) => Some(v),
                None => config.get("text_config").and_then(|t| t.get(&key)),
            };
            self.set_id(files, "config.json", typ, id)?;
        }
        Ok(())
    }

    /// Writes what was collected, in gguf-py's order: merges, ids, flags, chat template,
    /// normalizer flags.
    pub(crate) fn write(&self, kv: &mut Kv) {
        if !self.merges.is_empty() {
            kv.set(
                "tokenizer.ggml.merges",
                Value::Array(Array::String(self.merges.clone())),
            );
        }
        for (typ, id) in &self.ids {
            if let Some(key) = id_key(typ) {
                kv.set(key, Value::U32(*id));
            }
        }
        for (typ, v) in &self.add {
            if let Some(key) = add_key(typ) {
                kv.set(key, Value::Bool(*v));
            }
        }
        match &self.chat_template {
            Some(Json::String(t)) => kv.set("tokenizer.chat_template", Value::String(t.clone())),
            Some(Json::Array(list)) => write_template_list(kv, list),
            _ => {}
        }
        if let Some(v) = self.lowercase {
            kv.set("tokenizer.ggml.normalizer.lowercase", Value::Bool(v));
        }
        if let Some(v) = self.strip_accents {
            kv.set("tokenizer.ggml.normalizer.strip_accents", Value::Bool(v));
        }
    }
}

/// The named special tokens the post-processor rules read and rename.
struct Names<'a> {
    bos: &'a mut Option<Json>,
    cls: &'a mut Option<Json>,
    eos: &'a mut Option<Json>,
    sep: &'a Option<Json>,
}

/// `entry["SpecialToken"]["id"]` of a template entry.
fn special_id(entry: Option<&Json>) -> Option<String> {
    entry?
        .get("SpecialToken")?
        .get("id")?
        .as_str()
        .map(str::to_string)
}

/// The token of a `RobertaProcessing` `[token, id]` pair.
fn first_of(pair: Option<&Json>) -> Option<Json> {
    pair?.get(0).cloned()
}

/// Named chat templates: `default` becomes `tokenizer.chat_template`, the others
/// `tokenizer.chat_template.NAME` (names reduced to ASCII letters, digits and `_`), listed in
/// `tokenizer.chat_templates`.
fn write_template_list(kv: &mut Kv, list: &[Json]) {
    let mut default = None;
    let mut names: Vec<String> = Vec::new();
    for choice in list {
        let name: String = choice
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let Some(template) = choice.get("template").and_then(Json::as_str) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        if name == "default" {
            default = Some(template.to_string());
        } else {
            kv.set(
                format!("tokenizer.chat_template.{name}"),
                Value::String(template.to_string()),
            );
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if !names.is_empty() {
        kv.set(
            "tokenizer.chat_templates",
            Value::Array(Array::String(names)),
        );
    }
    if let Some(t) = default {
        kv.set("tokenizer.chat_template", Value::String(t));
    }
}

/// `tokenizer.json`'s merges as `"a b"` strings; the pair form (transformers 4.45+) has its spaces
/// written as U+0120, as gguf-py does, so that the string form stays unambiguous.
fn json_merges(files: &TokenizerFiles, tok: &Map<String, Json>) -> Result<Vec<String>> {
    let Some(list) = tok
        .get("model")
        .and_then(|m| m.get("merges"))
        .and_then(Json::as_array)
        .filter(|l| !l.is_empty())
    else {
        return Ok(Vec::new());
    };
    let bad = |i: usize| {
        files.field_error(
            "tokenizer.json",
            format!("model.merges[{i}]"),
            "unknown merges format",
        )
    };
    if list.first().is_some_and(Json::is_string) {
        return list
            .iter()
            .enumerate()
            .map(|(i, m)| m.as_str().map(str::to_string).ok_or_else(|| bad(i)))
            .collect();
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| match m.as_array().map(Vec::as_slice) {
            Some([Json::String(a), Json::String(b)]) => Ok(format!(
                "{} {}",
                a.replace(' ', "\u{120}"),
                b.replace(' ', "\u{120}")
            )),
            _ => Err(bad(i)),
        })
        .collect()
}

/// `merges.txt`: one `a b` pair a line, an optional `#` header line, blank lines skipped and
/// malformed lines dropped.
fn merges_txt(text: &str) -> Vec<String> {
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
        lines.next();
    }
    lines
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                [a, b] => Some(format!("{a} {b}")),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files(tok: Json, cfg: Option<Json>, config: Option<Json>) -> TokenizerFiles {
        TokenizerFiles::from_json_texts(
            &tok.to_string(),
            cfg.map(|c| c.to_string()).as_deref(),
            config.map(|c| c.to_string()).as_deref(),
        )
        .unwrap()
    }

    fn added(list: &[(u32, &str)]) -> Json {
        Json::Array(
            list.iter()
                .map(|(id, c)| json!({"id": id, "content": c, "special": true}))
                .collect(),
        )
    }

    #[test]
    fn ids_follow_discovery_order_and_first_wins() {
        let tok =
            json!({"added_tokens": added(&[(0, "<unk>"), (1, "<s>"), (2, "</s>")]), "model": {}});
        let cfg = json!({"eos_token": "</s>", "unk_token": {"content": "<unk>"}});
        let config = json!({"bos_token_id": 1, "eos_token_id": 7, "pad_token_id": [3]});
        let sv =
            SpecialVocab::load(&files(tok, Some(cfg), Some(config)), false, None, None).unwrap();
        assert_eq!(sv.ids, vec![("eos", 2), ("unk", 0), ("bos", 1)]);
    }

    #[test]
    fn template_processing_sets_bos_eos_and_sep() {
        let tok = json!({
            "added_tokens": added(&[(1, "<s>"), (2, "</s>")]),
            "model": {},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
                "pair": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
                         {"SpecialToken": {"id": "</s>"}}, {"Sequence": {"id": "B"}}]}
        });
        let cfg = json!({"bos_token": "<s>", "eos_token": "</s>", "add_eos_token": false});
        let sv = SpecialVocab::load(&files(tok, Some(cfg), None), false, None, Some(3)).unwrap();
        assert_eq!(sv.add, vec![("bos", true), ("sep", true), ("eos", false)]);
        assert_eq!(sv.ids, vec![("bos", 1), ("eos", 2), ("sep", 2)]);
    }

    #[test]
    fn trailing_template_token_becomes_eos_and_old_eos_eot() {
        let tok = json!({
            "added_tokens": added(&[(5, "<|end|>"), (6, "<|eot|>")]),
            "model": {},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "<|end|>"}}]}
        });
        let cfg = json!({"eos_token": "<|eot|>"});
        let sv = SpecialVocab::load(&files(tok, Some(cfg), None), false, None, None).unwrap();
        assert_eq!(sv.add, vec![("eos", true)]);
        assert_eq!(sv.ids, vec![("eos", 5), ("eot", 6)]);
    }

    #[test]
    fn negative_ids_are_refused_and_out_of_range_dropped() {
        let tok = json!({"model": {}});
        let e = SpecialVocab::load(
            &files(tok.clone(), None, Some(json!({"bos_token_id": -1}))),
            false,
            None,
            None,
        );
        assert!(matches!(e, Err(crate::Error::TokenizerField { .. })));
        let sv = SpecialVocab::load(
            &files(tok, None, Some(json!({"bos_token_id": 9}))),
            false,
            None,
            Some(9),
        )
        .unwrap();
        assert!(sv.ids.is_empty());
    }

    #[test]
    fn writes_merges_templates_and_normalizer_flags() {
        let tok = json!({
            "model": {"merges": [["a b", "c"], ["d", "e"]]},
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]},
            "post_processor": {"type": "ByteLevel"}
        });
        let cfg = json!({"chat_template": [{"name": "default", "template": "D"},
                                           {"name": "tool use", "template": "T"}]});
        let sv = SpecialVocab::load(&files(tok, Some(cfg), None), true, None, None).unwrap();
        let mut kv = Kv::default();
        sv.write(&mut kv);
        let keys: Vec<String> = kv.into_vec().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "tokenizer.ggml.merges",
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.chat_template.tool_use",
                "tokenizer.chat_templates",
                "tokenizer.chat_template",
                "tokenizer.ggml.normalizer.lowercase",
            ]
        );
        assert_eq!(sv.merges, ["a\u{120}b c", "d e"]);
    }

    #[test]
    fn merges_txt_skips_header_and_malformed_lines() {
        assert_eq!(
            merges_txt("#version: 0.2\na b\n\nbad\nc d e\nf g\n"),
            ["a b", "f g"]
        );
    }
}
