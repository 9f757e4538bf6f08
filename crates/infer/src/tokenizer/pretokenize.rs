//! Byte-level BPE pre-tokenisation: splitting text into words before merges, per `tokenizer.ggml.pre`.
//!
//! llama.cpp does not run the `tokenizer.json` regex through a Unicode regex engine. It keeps, per
//! pre-tokenizer type, a list of regexes applied one after the other (each splits the pieces the
//! previous one produced, and unmatched gaps stay pieces of their own), and it evaluates them in one
//! of three ways, which this module reproduces:
//!
//! * a hand-written splitter for the most common patterns (GPT-2, Llama-3, Qwen2, Qwen3.5, and
//!   "split on newlines"), driven by llama.cpp's code-point flags (`unicode::flags`);
//! * for other patterns that use `\p{..}`, a regex over a "collapsed" text in which every non-ASCII
//!   code point is replaced by one placeholder per category (and `\p{L}` becomes `[<placeholder>A-Za-z]`),
//!   so that e.g. `\p{Lu}` and `\p{Ll}` both mean "any letter" exactly as in llama.cpp;
//! * otherwise a regex over the code points, with non-ASCII whitespace replaced by `\x0B`.
//!
//! `\s`, `\d` and `\w` keep their ECMAScript (ASCII) meaning. The regexes are evaluated with
//! `fancy-regex` (look-arounds are needed), whose leftmost-first backtracking semantics are those of
//! ECMAScript `std::regex`.

use std::ops::Range;

use fancy_regex::Regex;

use super::error::TokenizerError;
use super::unicode::{self, LETTER, MARK, NUMBER, WHITESPACE};

/// The regexes of a pre-tokenizer, as written in llama.cpp's `llm_tokenizer_bpe` (kept verbatim so
/// that the hand-written splitters are selected by the same string comparison llama.cpp does).
mod patterns {
    pub const GPT2: &str =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
    pub const LLAMA3: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const QWEN35: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const NEWLINES: &str = "[^\\n]+|[\\n]+";
    pub const JAIS2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}";
    pub const DEEPSEEK_LLM: &[&str] = &[
        "[\r\n]",
        "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
        "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
        "\\s+$",
        "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
        "\\p{N}+",
    ];
    pub const DEEPSEEK3_LLM: &[&str] = &[
        "\\p{N}{1,3}",
        "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ];
    pub const SPARK2_5: &[&str] = &[
        "\\p{N}{1,3}",
        "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
        "\\p{N}",
    ];
    pub const YOUTU: &[&str] = &[
        "[\u{AC00}-\u{D7A3}\u{3131}-\u{318E}]+|[\u{FF01}\u{2026}\u{201C}\u{201D}\u{2018}\u{2019}\u{2014}\u{FF1A}\u{FF1B}\u{FF0C}\u{3001}-\u{303F}\u{FE30}-\u{FE4F}]+|[\u{3105}-\u{312F}]+|[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ];
    pub const DEEPSEEK_CODER: &[&str] = &[
        "[\r\n]",
        "\\s?\\p{L}+",
        "\\s?\\p{P}+",
        "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
        "\\p{N}",
    ];
    pub const FALCON: &[&str] = &["[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2, "[0-9][0-9][0-9]"];
    pub const STARCODER: &[&str] = &["\\p{N}", GPT2];
    pub const PORO: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+";
    pub const TEKKEN: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const CHAMELEON: &[&str] = &[
        "<sentinel:[0-9]+>",
        "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
        "([\\t\\n]|    |  )",
        "\\p{N}",
        "[\\p{P}!-/:-@\\[-`{-~]",
        GPT2,
    ];
    pub const GPT4O: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const GRANITE_EMB_MULTI: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const BAILINGMOE: &str = "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
    pub const SEED_CODER: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const UFAKZEKA: &str = "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    pub const EXAONE_MOE: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
    pub const MINICPM5: &[&str] = &[
        "\\p{N}{1,3}",
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ];
    pub const DEFAULT: &[&str] = &[
        "[\\p{P}\\$\\+<=>\\^~\\|]+",
        GPT2,
        "\\p{N}+",
        "[0-9][0-9][0-9]",
    ];
}

/// A pre-tokenizer type (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`), selected by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreType {
    /// llama.cpp's fallback list (also used when `tokenizer.ggml.pre` is missing).
    Default,
    /// Llama 3 (`llama3`, `llama-bpe`, `falcon3`, `pixtral`, ...).
    Llama3,
    /// Jais 2.
    Jais2,
    /// DBRX and Smaug (Llama 3's regex).
    Dbrx,
    /// DeepSeek LLM.
    DeepseekLlm,
    /// DeepSeek V3, Hunyuan dense, JoyAI, HY v4.
    Deepseek3Llm,
    /// Spark 2.5.
    Spark25,
    /// Youtu.
    Youtu,
    /// DeepSeek Coder.
    DeepseekCoder,
    /// Falcon.
    Falcon,
    /// StarCoder, Refact, Command-R, SmolLM, CodeShell, EXAONE, Minerva, Mellum 2.
    Starcoder,
    /// GPT-2, MPT, OLMo, Jais, Trillion, Granite-Docling.
    Gpt2,
    /// Qwen2, StableLM 2, Hunyuan, Solar-Open, Grok-2.
    Qwen2,
    /// Qwen 3.5.
    Qwen35,
    /// Poro, Bloom, GPT3-Finnish.
    Poro,
    /// ChatGLM 4 / GLM 4-5.
    ChatGlm4,
    /// Viking.
    Viking,
    /// Mistral Tekken.
    Tekken,
    /// Chameleon.
    Chameleon,
    /// GPT-4o, Llama 4, MiniMax-M2.
    Gpt4o,
    /// Granite embedding multilingual 97m.
    GraniteEmbMulti,
    /// BailingMoE.
    BailingMoe,
    /// Seed-Coder.
    SeedCoder,
    /// Ufakzeka.
    Ufakzeka,
    /// Laguna.
    Laguna,
    /// EXAONE-MoE.
    ExaoneMoe,
    /// Gemma 4 and Sarvam: SPM-style BPE over raw UTF-8, split on newlines only.
    Gemma4,
    /// MiniCPM 5.
    MiniCpm5,
}

/// Flags a pre-tokenizer name implies in llama.cpp's vocabulary loader, besides its [`PreType`].
#[derive(Debug, Clone, Copy)]
pub struct PreInfo {
    /// How text is split before the merges.
    pub pre: PreType,
    /// Whether decoding removes the spaces before punctuation (llama.cpp's `clean_spaces`).
    pub clean_spaces: bool,
    /// Whether a word found whole in the vocabulary skips the merges (Llama 3's `ignore_merges`).
    pub ignore_merges: bool,
    /// `Some(true)` where llama.cpp forces `add_bos` for this pre-tokenizer (before the GGUF key).
    pub add_bos: Option<bool>,
    /// Whether spaces are escaped as `▁` before the merges (SentencePiece-style BPE).
    pub escape_whitespaces: bool,
    /// llama.cpp disables the BOS token for ChatGLM.
    pub no_bos_token: bool,
}

impl PreInfo {
    /// Resolves a `tokenizer.ggml.pre` name; `None` for names llama.cpp does not know or that need a
    /// splitter shuku does not implement.
    pub fn from_name(name: &str) -> Option<PreInfo> {
        use PreType::*;
        let mut info = PreInfo {
            pre: Default,
            clean_spaces: true,
            ignore_merges: false,
            add_bos: None,
            escape_whitespaces: false,
            no_bos_token: false,
        };
        let unclean = |p: PreType| PreInfo {
            pre: p,
            clean_spaces: false,
            ..info
        };
        info = match name {
            "default" => info,
            "minicpm5" => PreInfo {
                pre: MiniCpm5,
                ignore_merges: true,
                ..info
            },
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => PreInfo {
                pre: Llama3,
                ignore_merges: true,
                add_bos: Some(true),
                ..info
            },
            "deepseek-llm" => unclean(DeepseekLlm),
            "deepseek-coder" => unclean(DeepseekCoder),
            "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => unclean(Deepseek3Llm),
            "spark2_5" => unclean(Spark25),
            "youtu" => PreInfo {
                ignore_merges: true,
                ..unclean(Youtu)
            },
            "falcon" => PreInfo {
                pre: Falcon,
                ..info
            },
            "mpt" | "olmo" | "jais" | "exaone4" | "gpt-2" | "phi-2" | "jina-es" | "jina-de"
            | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert"
            | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => PreInfo { pre: Gpt2, ..info },
            "trillion" | "granite-docling" => unclean(Gpt2),
            "jais-2" => PreInfo { pre: Jais2, ..info },
            "gemma4" | "granite-embed-multi-311m" => PreInfo {
                pre: Gemma4,
                escape_whitespaces: true,
                ..info
            },
            "sarvam-moe" => PreInfo {
                escape_whitespaces: true,
                ..unclean(Gemma4)
            },
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => PreInfo {
                pre: Starcoder,
                ..info
            },
            "command-r" | "smollm" => unclean(Starcoder),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
            | "grok-2" => unclean(Qwen2),
            "stablelm2" | "megrez" => PreInfo { pre: Qwen2, ..info },
            "qwen35" => unclean(Qwen35),
            "dbrx" | "smaug-bpe" => PreInfo { pre: Dbrx, ..info },
            "poro-chat" => unclean(Poro),
            "bloom" | "gpt3-finnish" => PreInfo { pre: Poro, ..info },
            "chatglm-bpe" => PreInfo {
                pre: ChatGlm4,
                no_bos_token: true,
                ..info
            },
            "glm4" | "glm5" => PreInfo {
                pre: ChatGlm4,
                no_bos_token: true,
                ignore_merges: true,
                ..info
            },
            "viking" => unclean(Viking),
            "tekken" => PreInfo {
                ignore_merges: true,
                add_bos: Some(true),
                ..unclean(Tekken)
            },
            "chameleon" => PreInfo {
                add_bos: Some(true),
                ..unclean(Chameleon)
            },
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => unclean(Gpt4o),
            "granite-embed-multi-97m" => PreInfo {
                ignore_merges: true,
                ..unclean(GraniteEmbMulti)
            },
            "bailingmoe" | "bailingmoe2" | "llada-moe" => unclean(BailingMoe),
            "seed-coder" => unclean(SeedCoder),
            "ufakzeka" => unclean(Ufakzeka),
            "laguna" => unclean(Laguna),
            "exaone-moe" => PreInfo {
                pre: ExaoneMoe,
                ..info
            },
            _ => return None,
        };
        Some(info)
    }
}

impl PreType {
    /// llama.cpp's regex list for this type.
    fn regexes(self) -> Vec<&'static str> {
        use patterns as p;
        match self {
            PreType::Default => p::DEFAULT.to_vec(),
            PreType::Llama3 | PreType::Dbrx | PreType::ChatGlm4 => vec![p::LLAMA3],
            PreType::Jais2 => vec![p::JAIS2],
            PreType::DeepseekLlm => p::DEEPSEEK_LLM.to_vec(),
            PreType::Deepseek3Llm => p::DEEPSEEK3_LLM.to_vec(),
            PreType::Spark25 => p::SPARK2_5.to_vec(),
            PreType::Youtu => p::YOUTU.to_vec(),
            PreType::DeepseekCoder => p::DEEPSEEK_CODER.to_vec(),
            PreType::Falcon => p::FALCON.to_vec(),
            PreType::Starcoder => p::STARCODER.to_vec(),
            PreType::Gpt2 => vec![p::GPT2],
            PreType::Qwen2 => vec![p::QWEN2],
            PreType::Qwen35 => vec![p::QWEN35],
            PreType::Poro => vec![p::PORO],
            PreType::Viking => vec![p::PORO, "\\p{N}"],
            PreType::Tekken => vec![p::TEKKEN],
            PreType::Chameleon => p::CHAMELEON.to_vec(),
            PreType::Gpt4o => vec![p::GPT4O],
            PreType::GraniteEmbMulti => vec![p::GRANITE_EMB_MULTI],
            PreType::BailingMoe => vec![p::BAILINGMOE],
            PreType::SeedCoder => vec![p::SEED_CODER],
            PreType::Ufakzeka => vec![p::UFAKZEKA],
            PreType::Laguna => vec![p::NEWLINES, p::QWEN2],
            PreType::ExaoneMoe => vec![p::EXAONE_MOE],
            PreType::Gemma4 => vec![p::NEWLINES],
            PreType::MiniCpm5 => p::MINICPM5.to_vec(),
        }
    }

    /// Whether words are mapped through GPT-2's byte↔unicode table before merging.
    pub fn byte_encode(self) -> bool {
        self != PreType::Gemma4
    }
}

/// One splitting pass.
#[derive(Debug)]
enum Step {
    Gpt2,
    /// Llama-3 / Qwen2 / Qwen3.5 family: digit groups of at most `max_digits`, `marks` = letters
    /// also absorb combining marks.
    Llama3 {
        max_digits: usize,
        marks: bool,
    },
    Newlines,
    Regex {
        re: Box<Regex>,
        collapsed: bool,
    },
}

/// A compiled pre-tokenizer.
#[derive(Debug)]
pub struct PreTokenizer {
    steps: Vec<Step>,
}

/// Sentinel for "outside the piece being split" (llama.cpp's `OUT_OF_RANGE`).
const OUT: u32 = 0xFFFF_FFFF;

/// Placeholders of the collapsed text (llama.cpp's `k_ucat_cpt`).
const COLLAPSED_OTHER: char = '\u{D0}';

impl PreTokenizer {
    /// Compiles the regex list of `pre`.
    pub fn new(pre: PreType) -> Result<PreTokenizer, TokenizerError> {
        let steps = pre
            .regexes()
            .into_iter()
            .map(|pattern| match pattern {
                patterns::GPT2 => Ok(Step::Gpt2),
                patterns::LLAMA3 => Ok(Step::Llama3 {
                    max_digits: 3,
                    marks: false,
                }),
                patterns::QWEN2 => Ok(Step::Llama3 {
                    max_digits: 1,
                    marks: false,
                }),
                patterns::QWEN35 => Ok(Step::Llama3 {
                    max_digits: 1,
                    marks: true,
                }),
                patterns::NEWLINES => Ok(Step::Newlines),
                _ => compile(pattern),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreTokenizer { steps })
    }

    /// Splits `text` into words, as byte ranges of `text`, in order and covering all of it.
    pub fn split(&self, text: &str) -> Result<Vec<Range<usize>>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let mut flags: Option<Vec<u16>> = None;
        let mut collapsed: Option<Haystack> = None;
        let mut wide: Option<Haystack> = None;
        // Piece lengths in code points, as in llama.cpp.
        let mut offsets = vec![cpts.len()];
        for step in &self.steps {
            offsets = match step {
                Step::Gpt2 => {
                    let f = flags.get_or_insert_with(|| text.chars().map(unicode::flags).collect());
                    split_gpt2(&cpts, f, &offsets)
                }
                Step::Llama3 { max_digits, marks } => {
                    let f = flags.get_or_insert_with(|| text.chars().map(unicode::flags).collect());
                    split_llama3(&cpts, f, &offsets, *max_digits, *marks)
                }
                Step::Newlines => split_newlines(&cpts, &offsets),
                Step::Regex {
                    re,
                    collapsed: true,
                } => {
                    let h = collapsed.get_or_insert_with(|| Haystack::collapsed(text));
                    h.split(re, &offsets)?
                }
                Step::Regex {
                    re,
                    collapsed: false,
                } => {
                    let h = wide.get_or_insert_with(|| Haystack::wide(text));
                    h.split(re, &offsets)?
                }
            };
        }
        // Code-point lengths → byte ranges.
        let mut ranges = Vec::with_capacity(offsets.len());
        let mut chars = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()));
        let mut start = chars.next().unwrap_or(0);
        for len in offsets {
            if len == 0 {
                continue;
            }
            let end = chars.nth(len - 1).unwrap_or(text.len());
            ranges.push(start..end);
            start = end;
        }
        Ok(ranges)
    }
}

/// The text a regex step runs on, with the byte offset of each code point (plus the end).
struct Haystack {
    text: String,
    starts: Vec<usize>,
}

impl Haystack {
    fn build(text: &str, map: impl Fn(char) -> char) -> Haystack {
        let mut out = String::with_capacity(text.len());
        let mut starts = Vec::with_capacity(text.len() + 1);
        for c in text.chars() {
            starts.push(out.len());
            out.push(map(c));
        }
        starts.push(out.len());
        Haystack { text: out, starts }
    }

    /// llama.cpp's collapsed text: ASCII kept, every other code point replaced by its category's
    /// placeholder (whitespace by `\x0B`).
    fn collapsed(text: &str) -> Haystack {
        Haystack::build(text, |c| {
            if (c as u32) < 128 {
                return c;
            }
            let f = unicode::flags(c);
            if f & WHITESPACE != 0 {
                '\u{0B}'
            } else {
                match f & unicode::MASK_CATEGORIES {
                    NUMBER => '\u{D1}',
                    LETTER => '\u{D2}',
                    unicode::PUNCTUATION => '\u{D3}',
                    MARK => '\u{D4}',
                    unicode::SYMBOL => '\u{D5}',
                    _ => COLLAPSED_OTHER,
                }
            }
        })
    }

    /// The code points, with non-ASCII whitespace replaced by `\x0B` (what `std::wregex` sees).
    fn wide(text: &str) -> Haystack {
        Haystack::build(text, |c| {
            if (c as u32) > 0x7F && unicode::flags(c) & WHITESPACE != 0 {
                '\u{0B}'
            } else {
                c
            }
        })
    }

    /// Code-point index of byte offset `b` (which is a char boundary).
    fn cp_at(&self, b: usize) -> usize {
        self.starts.partition_point(|&s| s < b)
    }

    fn split(&self, re: &Regex, offsets: &[usize]) -> Result<Vec<usize>, TokenizerError> {
        let mut out = Vec::with_capacity(offsets.len());
        let mut start = 0usize;
        for &len in offsets {
            let (b0, b1) = (self.starts[start], self.starts[start + len]);
            let piece = &self.text[b0..b1];
            let mut prev = start;
            for m in re.find_iter(piece) {
                let m = m.map_err(|e| TokenizerError::Regex(e.to_string()))?;
                if m.start() == m.end() {
                    continue;
                }
                let (ms, me) = (self.cp_at(b0 + m.start()), self.cp_at(b0 + m.end()));
                if ms > prev {
                    out.push(ms - prev);
                }
                out.push(me - ms);
                prev = me;
            }
            if prev < start + len {
                out.push(start + len - prev);
            }
            start += len;
        }
        Ok(out)
    }
}

/// Compiles one of llama.cpp's regexes for the collapsed or the wide text.
fn compile(pattern: &str) -> Result<Step, TokenizerError> {
    const CATS: [&str; 10] = [
        "\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}", "\\p{Lu}", "\\p{Ll}", "\\p{Lt}",
        "\\p{Lm}", "\\p{Lo}",
    ];
    let collapsed = CATS.iter().any(|c| pattern.contains(c));
    let translated = translate(pattern, collapsed).map_err(|why| {
        TokenizerError::Regex(format!("{why} in pre-tokenizer regex {pattern:?}"))
    })?;
    let re = fancy_regex::RegexBuilder::new(&translated)
        .backtrack_limit(100_000_000)
        .build()
        .map_err(|e| TokenizerError::Regex(format!("{e} in pre-tokenizer regex {pattern:?}")))?;
    Ok(Step::Regex {
        re: Box::new(re),
        collapsed,
    })
}

/// ECMAScript's ASCII `\s`, as the content of a character class.
const WS_CLASS: &str = "\\t\\n\\x0B\\x0C\\r\\x20";

/// Rewrites an llama.cpp regex into `fancy-regex` syntax with ECMAScript meanings for `\s`, `\d`,
/// `\w`, and (in collapsed mode) llama.cpp's meaning for `\p{..}`.
fn translate(pattern: &str, collapsed: bool) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '[' && !inside {
            inside = true;
            out.push('[');
            i += 1;
            continue;
        }
        if c == ']' && inside {
            inside = false;
            out.push(']');
            i += 1;
            continue;
        }
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = chars.get(i + 1) else {
            return Err("trailing backslash".into());
        };
        i += 2;
        let wrap = |body: &str, out: &mut String| {
            if inside {
                out.push_str(body);
            } else {
                out.push('[');
                out.push_str(body);
                out.push(']');
            }
        };
        match e {
            's' => wrap(WS_CLASS, &mut out),
            'd' => wrap("0-9", &mut out),
            'w' => wrap("0-9A-Za-z_", &mut out),
            'S' | 'D' | 'W' if inside => return Err(format!("\\{e} inside a class")),
            'S' => out.push_str(&format!("[^{WS_CLASS}]")),
            'D' => out.push_str("[^0-9]"),
            'W' => out.push_str("[^0-9A-Za-z_]"),
            'p' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .ok_or("unclosed \\p{")?;
                let name: String = chars[i + 1..i + close].iter().collect();
                i += close + 1;
                if !collapsed {
                    return Err(format!("unsupported class \\p{{{name}}}"));
                }
                let body = match name.as_str() {
                    "N" => "\\x{D1}0-9",
                    "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => "\\x{D2}A-Za-z",
                    "P" => "\\x{D3}\\x{21}-\\x{23}\\x{25}-\\x{2A}\\x{2C}-\\x{2F}\\x{3A}-\\x{3B}\\x{3F}-\\x{40}\\x{5B}-\\x{5D}\\x{5F}\\x{7B}\\x{7D}",
                    "M" => "\\x{D4}",
                    "S" => "\\x{D5}\\x{24}\\x{2B}\\x{3C}-\\x{3E}\\x{5E}\\x{60}\\x{7C}\\x{7E}",
                    _ => return Err(format!("unsupported class \\p{{{name}}}")),
                };
                wrap(body, &mut out);
            }
            _ => {
                out.push('\\');
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Flags at `pos` if inside `[ini, end)`, else 0 (llama.cpp's `_get_flags`).
#[inline]
fn fl(flags: &[u16], ini: usize, end: usize, pos: usize) -> u16 {
    if ini <= pos && pos < end {
        flags[pos]
    } else {
        0
    }
}

#[inline]
fn cp(cpts: &[u32], ini: usize, end: usize, pos: usize) -> u32 {
    if ini <= pos && pos < end {
        cpts[pos]
    } else {
        OUT
    }
}

/// Pushes the piece `[*prev, end)` if non-empty; returns its length.
#[inline]
fn add(out: &mut Vec<usize>, prev: &mut usize, end: usize) -> usize {
    let len = end - *prev;
    if len > 0 {
        out.push(len);
    }
    *prev = end;
    len
}

/// llama.cpp's `unicode_regex_split_custom_gpt2`:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
fn split_gpt2(cpts: &[u32], flags: &[u16], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(cpts.len() / 3 + 1);
    let mut start = 0;
    for &len in offsets {
        let (ini, end) = (start, start + len);
        start = end;
        let f = |p: usize| fl(flags, ini, end, p);
        let c = |p: usize| cp(cpts, ini, end, p);
        let mut prev = ini;
        let mut pos = ini;
        while pos < end {
            let cpt = c(pos);
            let flags0 = f(pos);
            if cpt == '\'' as u32 && pos + 1 < end {
                let next = c(pos + 1);
                if [b's', b't', b'm', b'd'].iter().any(|&x| next == x as u32) {
                    pos += add(&mut out, &mut prev, pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let nn = c(pos + 2);
                    let pair = |a: u8, b: u8| next == a as u32 && nn == b as u32;
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += add(&mut out, &mut prev, pos + 3);
                        continue;
                    }
                }
            }
            let space = (cpt == ' ' as u32) as usize;
            let mut f2 = if space == 1 { f(pos + 1) } else { flags0 };
            if f2 & LETTER != 0 {
                pos += space;
                while f2 & LETTER != 0 {
                    pos += 1;
                    f2 = f(pos);
                }
                add(&mut out, &mut prev, pos);
                continue;
            }
            if f2 & NUMBER != 0 {
                pos += space;
                while f2 & NUMBER != 0 {
                    pos += 1;
                    f2 = f(pos);
                }
                add(&mut out, &mut prev, pos);
                continue;
            }
            if f2 & (WHITESPACE | LETTER | NUMBER) == 0 && f2 != 0 {
                pos += space;
                while f2 & (WHITESPACE | LETTER | NUMBER) == 0 && f2 != 0 {
                    pos += 1;
                    f2 = f(pos);
                }
                add(&mut out, &mut prev, pos);
                continue;
            }
            let mut n_ws = 0;
            while f(pos + n_ws) & WHITESPACE != 0 {
                n_ws += 1;
            }
            if n_ws > 1 && c(pos + n_ws) != OUT {
                pos += n_ws - 1;
                add(&mut out, &mut prev, pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                add(&mut out, &mut prev, pos);
                continue;
            }
            pos += 1;
            add(&mut out, &mut prev, pos);
        }
    }
    out
}

/// llama.cpp's `unicode_regex_split_custom_llama3` / `_qwen2` / `_qwen35`:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// with `\p{N}{1,max_digits}`, and `[\p{L}\p{M}]` for letters when `marks`.
fn split_llama3(
    cpts: &[u32],
    flags: &[u16],
    offsets: &[usize],
    max_digits: usize,
    marks: bool,
) -> Vec<usize> {
    let letter = if marks { LETTER | MARK } else { LETTER };
    let lower = |c: u32| -> u32 {
        if (b'A' as u32..=b'Z' as u32).contains(&c) {
            c + 32
        } else {
            c
        }
    };
    let is_rn = |c: u32| c == '\r' as u32 || c == '\n' as u32;
    let mut out = Vec::with_capacity(cpts.len() / 3 + 1);
    let mut start = 0;
    for &len in offsets {
        let (ini, end) = (start, start + len);
        start = end;
        let f = |p: usize| fl(flags, ini, end, p);
        let c = |p: usize| cp(cpts, ini, end, p);
        let mut prev = ini;
        let mut pos = ini;
        while pos < end {
            let cpt = c(pos);
            let flags0 = f(pos);
            if cpt == '\'' as u32 && pos + 1 < end {
                let next = lower(c(pos + 1));
                if [b's', b't', b'm', b'd'].iter().any(|&x| next == x as u32) {
                    pos += add(&mut out, &mut prev, pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let nn = lower(c(pos + 2));
                    let pair = |a: u8, b: u8| next == a as u32 && nn == b as u32;
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += add(&mut out, &mut prev, pos + 3);
                        continue;
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_rn(cpt) || flags0 & NUMBER != 0)
                && (flags0 & letter != 0 || f(pos + 1) & letter != 0)
            {
                pos += 1;
                while f(pos) & letter != 0 {
                    pos += 1;
                }
                add(&mut out, &mut prev, pos);
                continue;
            }
            // \p{N}{1,max_digits}
            if flags0 & NUMBER != 0 {
                let mut first = pos;
                while f(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - first >= max_digits {
                        add(&mut out, &mut prev, pos);
                        first = pos;
                    }
                }
                add(&mut out, &mut prev, pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let space = (cpt == ' ' as u32) as usize;
            let mut f2 = if space == 1 { f(pos + 1) } else { flags0 };
            let other = |x: u16| x & (WHITESPACE | letter | NUMBER) == 0;
            if other(f2) && flags0 != 0 {
                pos += space;
                while other(f2) && f2 != 0 {
                    pos += 1;
                    f2 = f(pos);
                }
                while is_rn(c(pos)) {
                    pos += 1;
                }
                add(&mut out, &mut prev, pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_rn_end = 0;
            while f(pos + n_ws) & WHITESPACE != 0 {
                if is_rn(c(pos + n_ws)) {
                    last_rn_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // \s*[\r\n]+
            if last_rn_end > 0 {
                pos = last_rn_end;
                add(&mut out, &mut prev, pos);
                continue;
            }
            // \s+(?!\S)
            if n_ws > 1 && c(pos + n_ws) != OUT {
                pos += n_ws - 1;
                add(&mut out, &mut prev, pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                add(&mut out, &mut prev, pos);
                continue;
            }
            pos += 1;
            add(&mut out, &mut prev, pos);
        }
    }
    out
}

/// `[^\n]+|[\n]+`: runs of newlines and runs of anything else.
fn split_newlines(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let nl = cpts[pos] == '\n' as u32;
            let run = pos;
            while pos < end && (cpts[pos] == '\n' as u32) == nl {
                pos += 1;
            }
            out.push(pos - run);
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreType, text: &str) -> Vec<String> {
        let p = PreTokenizer::new(pre).unwrap();
        p.split(text)
            .unwrap()
            .into_iter()
            .map(|r| text[r].to_string())
            .collect()
    }

    #[test]
    fn gpt2_splits_contractions_words_and_spaces() {
        assert_eq!(
            words(PreType::Gpt2, "Hello world's  end\n"),
            ["Hello", " world", "'s", " ", " end", "\n"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(
            words(PreType::Llama3, "1234567 I'M"),
            ["123", "456", "7", " I", "'M"]
        );
    }

    #[test]
    fn every_regex_compiles() {
        use PreType::*;
        for pre in [
            Default,
            Llama3,
            Jais2,
            Dbrx,
            DeepseekLlm,
            Deepseek3Llm,
            Spark25,
            Youtu,
            DeepseekCoder,
            Falcon,
            Starcoder,
            Gpt2,
            Qwen2,
            Qwen35,
            Poro,
            ChatGlm4,
            Viking,
            Tekken,
            Chameleon,
            Gpt4o,
            GraniteEmbMulti,
            BailingMoe,
            SeedCoder,
            Ufakzeka,
            Laguna,
            ExaoneMoe,
            Gemma4,
            MiniCpm5,
        ] {
            let p = PreTokenizer::new(pre).unwrap_or_else(|e| panic!("{pre:?}: {e}"));
            let text = "Hello, y'all! 3333 нещо\n\n  🦙.cpp 我想在";
            let pieces = p.split(text).unwrap();
            assert_eq!(
                pieces.iter().map(|r| r.len()).sum::<usize>(),
                text.len(),
                "{pre:?}"
            );
        }
    }
}
