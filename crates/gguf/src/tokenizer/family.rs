//! Which vocabulary writer each model family uses, and the family's own additions, following the
//! `set_vocab` methods of llama.cpp's converter (`LlamaModel`, `Qwen2Model`, `Gemma3Model`,
//! `Phi3MiniModel`, and `TextModel` for the rest).

use serde_json::Value as Json;

use super::files::TokenizerFiles;
use super::kv::Kv;
use super::special::SpecialVocab;
use super::spm::Flavor;
use super::{gpt2, llama_hf, spm, spm_json, write_llama_vocab, ExportOptions};
use crate::error::{Error, Result};
use crate::value::Value;

/// The vocabulary writer a folder's tokenizer goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VocabKind {
    /// `tokenizer.model` read as llama.cpp's `_set_vocab_sentencepiece` reads it (`"llama"`).
    SentencePiece,
    /// `tokenizer.model` read as llama.cpp's Phi-3 converter reads it (`"llama"`).
    Phi3SentencePiece,
    /// A byte-fallback BPE `tokenizer.json` read as gguf-py's `LlamaHfVocab` (`"llama"`).
    LlamaHf,
    /// A SentencePiece-style `tokenizer.json` that llama.cpp's converter has no working path
    /// for, written as a SentencePiece vocabulary (`"llama"`) by shuku's own rules.
    SentencePieceJson,
    /// Byte-level BPE from `tokenizer.json` (`"gpt2"`): needs `tokenizer.ggml.pre`.
    Gpt2,
}

/// The converter classes whose `set_vocab` differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Llama,
    Qwen2,
    Gemma3,
    Phi3,
    Other,
}

fn family(arch: &str) -> Family {
    match arch {
        // shuku writes `deci` only for Llama-family models whose layers were pruned to
        // different widths; the tokenizer is still the Llama model's.
        a if crate::is_llama_arch(a) => Family::Llama,
        "qwen2" | "qwen3" => Family::Qwen2,
        "gemma3" => Family::Gemma3,
        "phi3" => Family::Phi3,
        _ => Family::Other,
    }
}

fn tokenizer_class(files: &TokenizerFiles) -> Option<&str> {
    files
        .tokenizer_config()
        .and_then(|c| c.get("tokenizer_class"))
        .and_then(Json::as_str)
}

impl TokenizerFiles {
    /// The vocabulary writer llama.cpp's converter uses for this folder as the GGUF
    /// architecture `arch`.
    pub fn vocab_kind(&self, arch: &str) -> Result<VocabKind> {
        let sp = self.has_sentencepiece();
        Ok(match family(arch) {
            Family::Llama => {
                if tokenizer_class(self) == Some("HybridDNATokenizer") {
                    return Err(self.field_error(
                        "tokenizer_config.json",
                        "tokenizer_class",
                        "HybridDNATokenizer vocabularies are not supported",
                    ));
                }
                if sp {
                    VocabKind::SentencePiece
                } else {
                    let tok = self.require_tokenizer_json()?;
                    if llama_hf::eligible(tok) {
                        VocabKind::LlamaHf
                    } else if spm_json::eligible(tok) {
                        VocabKind::SentencePieceJson
                    } else {
                        VocabKind::Gpt2
                    }
                }
            }
            Family::Qwen2 | Family::Gemma3 if sp => VocabKind::SentencePiece,
            Family::Phi3 if tokenizer_class(self) == Some("GPT2Tokenizer") => VocabKind::Gpt2,
            Family::Phi3 if sp => VocabKind::Phi3SentencePiece,
            Family::Phi3 => return Err(self.field_error("tokenizer.model", "", "missing")),
            Family::Qwen2 | Family::Gemma3 | Family::Other => VocabKind::Gpt2,
        })
    }
}

/// The vocabulary writers' common tail for SentencePiece-type vocabularies.
fn write_sentencepiece_type(
    files: &TokenizerFiles,
    kv: &mut Kv,
    pre: &str,
    v: spm::Vocab,
) -> Result<()> {
    let n = v.tokens.len();
    write_llama_vocab(kv, pre, v);
    SpecialVocab::load(files, false, None, Some(n))?.write(kv);
    Ok(())
}

/// CodeLlama's infill vocabulary: llama.cpp reads the special vocabulary again for the infill
/// types, with their usual ids as fallbacks; of those, only the EOT has a GGUF key.
fn codellama_infill(files: &TokenizerFiles, kv: &mut Kv) -> Result<()> {
    let types = ["prefix", "suffix", "middle", "eot"];
    let mut sv = SpecialVocab::load(files, false, Some(&types), None)?;
    for (typ, id) in types.into_iter().zip(32007u32..) {
        sv.set_id(files, "config.json", typ, Some(&Json::from(id)))?;
    }
    sv.write(kv);
    Ok(())
}

pub(crate) fn export(
    files: &TokenizerFiles,
    arch: &str,
    opts: &ExportOptions,
) -> Result<Vec<(String, Value)>> {
    let fam = family(arch);
    let kind = files.vocab_kind(arch)?;
    let mut kv = Kv::default();
    if fam == Family::Llama {
        if let Some(b) = files
            .tokenizer_config()
            .and_then(|c| c.get("add_prefix_space"))
            .and_then(Json::as_bool)
        {
            kv.set("tokenizer.ggml.add_space_prefix", Value::Bool(b));
        }
    }
    let pre = opts.pre.as_deref().unwrap_or("default");
    match kind {
        VocabKind::SentencePiece => {
            let v = spm::create(files, opts.vocab_size, Flavor::Standard)?;
            write_sentencepiece_type(files, &mut kv, pre, v)?;
        }
        VocabKind::Phi3SentencePiece => {
            let v = spm::create(files, opts.vocab_size, Flavor::Phi3)?;
            write_sentencepiece_type(files, &mut kv, pre, v)?;
        }
        VocabKind::LlamaHf => {
            write_sentencepiece_type(files, &mut kv, pre, llama_hf::create(files)?)?
        }
        VocabKind::SentencePieceJson => spm_json::write(files, &mut kv, opts.vocab_size, pre)?,
        VocabKind::Gpt2 => {
            let Some(pre) = opts.pre.as_deref() else {
                return Err(Error::UnknownPreTokenizer(format!(
                    "of {} (byte-level BPE is named by hashing the HF tokenizer's encoding of \
                     llama.cpp's check text; shuku_model::tokenizer_metadata does that)",
                    files.path("tokenizer.json").display()
                )));
            };
            gpt2::write(files, &mut kv, opts, pre)?;
        }
    }
    match fam {
        Family::Llama => {
            let n_vocab = opts.vocab_size.unwrap_or(32000);
            if n_vocab == 32016 {
                codellama_infill(files, &mut kv)?;
            }
            // llama.cpp's rule for IBM Granite's small models, which share this vocabulary size.
            if n_vocab == 49152 {
                kv.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
            }
        }
        Family::Gemma3 if kind == VocabKind::SentencePiece => {
            kv.set("tokenizer.ggml.add_space_prefix", Value::Bool(false));
        }
        _ => {}
    }
    Ok(kv.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentencepiece::{Piece, PieceType, SentencePieceModel};
    use serde_json::json;

    fn byte_level() -> Json {
        json!({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
               "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})
    }

    fn with_sp(mut f: TokenizerFiles) -> TokenizerFiles {
        f.sentencepiece = Some(SentencePieceModel {
            pieces: vec![Piece {
                piece: "<unk>".into(),
                score: 0.0,
                kind: PieceType::Unknown,
            }],
        });
        f
    }

    #[test]
    fn families_choose_their_vocabulary() {
        let bpe = TokenizerFiles::from_json_texts(&byte_level().to_string(), None, None).unwrap();
        let sp = with_sp(bpe.clone());
        for arch in ["llama", "qwen2", "qwen3", "gemma3", "stablelm"] {
            assert_eq!(bpe.vocab_kind(arch).unwrap(), VocabKind::Gpt2, "{arch}");
        }
        for arch in ["llama", "deci", "qwen2", "gemma3"] {
            assert_eq!(
                sp.vocab_kind(arch).unwrap(),
                VocabKind::SentencePiece,
                "{arch}"
            );
        }
        assert_eq!(sp.vocab_kind("stablelm").unwrap(), VocabKind::Gpt2);
        assert_eq!(sp.vocab_kind("phi3").unwrap(), VocabKind::Phi3SentencePiece);
        assert!(matches!(
            bpe.vocab_kind("phi3"),
            Err(Error::TokenizerField { .. })
        ));
        let gpt2_cfg = json!({"tokenizer_class": "GPT2Tokenizer"}).to_string();
        let phi4 =
            TokenizerFiles::from_json_texts(&byte_level().to_string(), Some(&gpt2_cfg), None)
                .unwrap();
        assert_eq!(phi4.vocab_kind("phi3").unwrap(), VocabKind::Gpt2);
    }

    #[test]
    fn byte_level_bpe_needs_a_pre_name() {
        let bpe = TokenizerFiles::from_json_texts(&byte_level().to_string(), None, None).unwrap();
        let opts = ExportOptions::default();
        assert!(matches!(
            export(&bpe, "qwen2", &opts),
            Err(Error::UnknownPreTokenizer(_))
        ));
        let opts = ExportOptions {
            pre: Some("qwen2".into()),
            ..ExportOptions::default()
        };
        let m = export(&bpe, "qwen2", &opts).unwrap();
        assert_eq!(
            m[1],
            (
                "tokenizer.ggml.pre".to_string(),
                Value::String("qwen2".into())
            )
        );
    }

    #[test]
    fn llama_writes_add_prefix_space_first_and_gemma3_turns_it_off() {
        let cfg = json!({"add_prefix_space": true}).to_string();
        let f = with_sp(
            TokenizerFiles::from_json_texts(&byte_level().to_string(), Some(&cfg), None).unwrap(),
        );
        let m = export(&f, "llama", &ExportOptions::default()).unwrap();
        assert_eq!(
            m[0],
            (
                "tokenizer.ggml.add_space_prefix".to_string(),
                Value::Bool(true)
            )
        );
        let m = export(&f, "gemma3", &ExportOptions::default()).unwrap();
        let last = m.last().cloned();
        assert_eq!(
            last,
            Some((
                "tokenizer.ggml.add_space_prefix".to_string(),
                Value::Bool(false)
            ))
        );
    }

    #[test]
    fn codellama_gets_its_eot_and_granite_sized_vocabularies_no_bos() {
        let f = with_sp(TokenizerFiles::default());
        let opts = |n| ExportOptions {
            vocab_size: Some(n),
            ..ExportOptions::default()
        };
        let m = export(&f, "llama", &opts(32016)).unwrap();
        assert!(m.contains(&("tokenizer.ggml.eot_token_id".to_string(), Value::U32(32010))));
        let m = export(&f, "llama", &opts(49152)).unwrap();
        assert!(m.contains(&(
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(false)
        )));
    }
}
