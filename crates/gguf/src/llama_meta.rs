//! llama.cpp's metadata key conventions as typed values.
//!
//! `general.*` keys ([`GeneralMeta`]), the `general.file_type` ids ([`LlamaFileType`]) and the
//! per-architecture hyper-parameters ([`ArchParams`]). Widths that pruning can make differ per
//! layer are [`PerLayer`]: written as a scalar when uniform and as an array otherwise, which
//! llama.cpp's loader accepts for these keys.

use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::reader::GgufFile;
use crate::value::{Array, Value};

/// Whether llama.cpp runs architecture `arch` with its llama graph: `llama`, and `deci`, the same
/// tensors, rotary layout and tokenizer with head counts and FFN width read per layer (how
/// structurally pruned llamas are stored).
pub fn is_llama_arch(arch: &str) -> bool {
    matches!(arch, "llama" | "deci")
}

macro_rules! file_types {
    ($($var:ident = $id:literal, $name:literal, $q:literal;)*) => {
        /// llama.cpp's `llama_ftype`: the `general.file_type` id describing the dominant tensor type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        #[non_exhaustive]
        pub enum LlamaFileType { $(#[doc = $name] $var = $id,)* }

        impl LlamaFileType {
            /// The type with this id.
            pub fn from_id(id: u32) -> Option<Self> {
                match id { $($id => Some(Self::$var),)* _ => None }
            }
            /// Name as llama-quantize prints it.
            pub fn name(self) -> &'static str {
                match self { $(Self::$var => $name,)* }
            }
            /// Whether tensors are block-quantized (then `general.quantization_version` is set).
            pub fn is_quantized(self) -> bool {
                match self { $(Self::$var => $q,)* }
            }
        }
    };
}

file_types! {
    AllF32 = 0, "F32", false;
    MostlyF16 = 1, "F16", false;
    MostlyQ4_0 = 2, "Q4_0", true;
    MostlyQ4_1 = 3, "Q4_1", true;
    MostlyQ8_0 = 7, "Q8_0", true;
    MostlyQ5_0 = 8, "Q5_0", true;
    MostlyQ5_1 = 9, "Q5_1", true;
    MostlyQ2_K = 10, "Q2_K", true;
    MostlyQ3_K_S = 11, "Q3_K_S", true;
    MostlyQ3_K_M = 12, "Q3_K_M", true;
    MostlyQ3_K_L = 13, "Q3_K_L", true;
    MostlyQ4_K_S = 14, "Q4_K_S", true;
    MostlyQ4_K_M = 15, "Q4_K_M", true;
    MostlyQ5_K_S = 16, "Q5_K_S", true;
    MostlyQ5_K_M = 17, "Q5_K_M", true;
    MostlyQ6_K = 18, "Q6_K", true;
    MostlyIQ2_XXS = 19, "IQ2_XXS", true;
    MostlyIQ2_XS = 20, "IQ2_XS", true;
    MostlyQ2_K_S = 21, "Q2_K_S", true;
    MostlyIQ3_XS = 22, "IQ3_XS", true;
    MostlyIQ3_XXS = 23, "IQ3_XXS", true;
    MostlyIQ1_S = 24, "IQ1_S", true;
    MostlyIQ4_NL = 25, "IQ4_NL", true;
    MostlyIQ3_S = 26, "IQ3_S", true;
    MostlyIQ3_M = 27, "IQ3_M", true;
    MostlyIQ2_S = 28, "IQ2_S", true;
    MostlyIQ2_M = 29, "IQ2_M", true;
    MostlyIQ4_XS = 30, "IQ4_XS", true;
    MostlyIQ1_M = 31, "IQ1_M", true;
    MostlyBF16 = 32, "BF16", false;
    MostlyTQ1_0 = 36, "TQ1_0", true;
    MostlyTQ2_0 = 37, "TQ2_0", true;
    MostlyMXFP4_MOE = 38, "MXFP4_MOE", true;
}

impl LlamaFileType {
    /// The numeric id.
    pub fn id(self) -> u32 {
        self as u32
    }
}

/// The `general.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneralMeta {
    /// `general.architecture` (`llama`, `qwen2`, `gemma3`…); prefixes the [`ArchParams`] keys.
    pub architecture: String,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.file_type`.
    pub file_type: Option<LlamaFileType>,
    /// `general.quantization_version` (2 for current ggml quant formats).
    pub quantization_version: Option<u32>,
    /// `general.alignment`.
    pub alignment: Option<u32>,
}

impl GeneralMeta {
    /// Architecture and name, nothing else set.
    pub fn new(architecture: impl Into<String>, name: Option<String>) -> Self {
        GeneralMeta {
            architecture: architecture.into(),
            name,
            file_type: None,
            quantization_version: None,
            alignment: None,
        }
    }

    /// Sets the file type, and `quantization_version = 2` when it is quantized.
    pub fn with_file_type(mut self, ft: LlamaFileType) -> Self {
        self.file_type = Some(ft);
        self.quantization_version = ft.is_quantized().then_some(2);
        self
    }

    /// The keys, in llama.cpp's usual order.
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let mut v = vec![(
            "general.architecture".to_string(),
            Value::String(self.architecture.clone()),
        )];
        if let Some(n) = &self.name {
            v.push(("general.name".into(), Value::String(n.clone())));
        }
        if let Some(ft) = self.file_type {
            v.push(("general.file_type".into(), Value::U32(ft.id())));
        }
        if let Some(q) = self.quantization_version {
            v.push(("general.quantization_version".into(), Value::U32(q)));
        }
        if let Some(a) = self.alignment {
            v.push(("general.alignment".into(), Value::U32(a)));
        }
        v
    }

    /// Reads the keys; only `general.architecture` is required.
    pub fn from_metadata(m: &Metadata) -> Result<Self> {
        let file_type = match m.opt_u32("general.file_type")? {
            None => None,
            Some(id) => Some(LlamaFileType::from_id(id).ok_or_else(|| Error::WrongType {
                key: "general.file_type".into(),
                expected: "a llama_ftype id".into(),
                found: format!("unknown id {id}"),
            })?),
        };
        Ok(GeneralMeta {
            architecture: m.get_str("general.architecture")?.to_string(),
            name: m.opt_str("general.name")?.map(str::to_string),
            file_type,
            quantization_version: m.opt_u32("general.quantization_version")?,
            alignment: m.opt_u32("general.alignment")?,
        })
    }
}

/// A value that is either the same for every layer or given per layer.
#[derive(Debug, Clone, PartialEq)]
pub enum PerLayer<T> {
    /// Same for all layers (written as a scalar).
    Uniform(T),
    /// One value per layer (written as an array).
    Layers(Vec<T>),
}

impl<T: Copy + PartialEq> PerLayer<T> {
    /// The value for layer `i` (`None` if out of range for per-layer values).
    pub fn get(&self, i: usize) -> Option<T> {
        match self {
            PerLayer::Uniform(v) => Some(*v),
            PerLayer::Layers(v) => v.get(i).copied(),
        }
    }

    /// The single value when every layer agrees.
    pub fn uniform(&self) -> Option<T> {
        match self {
            PerLayer::Uniform(v) => Some(*v),
            PerLayer::Layers(v) => {
                let first = *v.first()?;
                v.iter().all(|x| *x == first).then_some(first)
            }
        }
    }

    /// Collapses an all-equal `Layers` into `Uniform`.
    pub fn simplified(self) -> Self {
        match self.uniform() {
            Some(u) => PerLayer::Uniform(u),
            None => self,
        }
    }
}

impl PerLayer<u32> {
    fn to_value(&self) -> Value {
        match self {
            PerLayer::Uniform(v) => Value::U32(*v),
            // llama.cpp reads per-layer arrays of INT32 or UINT32; gguf-py writes INT32, and so do
            // we when every value fits, for the widest compatibility.
            PerLayer::Layers(v) => match v.iter().map(|&x| i32::try_from(x)).collect() {
                Ok(i) => Value::Array(Array::I32(i)),
                Err(_) => Value::Array(Array::U32(v.clone())),
            },
        }
    }

    fn from_value(key: &str, v: &Value) -> Result<Self> {
        let wrong = || Error::WrongType {
            key: key.to_string(),
            expected: "u32 or array of u32".into(),
            found: v.type_description(),
        };
        match v {
            Value::Array(a) => Ok(PerLayer::Layers(a.to_u32_vec().ok_or_else(wrong)?)),
            v => Ok(PerLayer::Uniform(v.as_u32().ok_or_else(wrong)?)),
        }
    }
}

/// Per-architecture hyper-parameters (`{arch}.*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchParams {
    /// Architecture name, the key prefix.
    pub arch: String,
    /// `{arch}.context_length`
    pub context_length: u32,
    /// `{arch}.embedding_length`
    pub embedding_length: u32,
    /// `{arch}.block_count`
    pub block_count: u32,
    /// `{arch}.feed_forward_length`
    pub feed_forward_length: PerLayer<u32>,
    /// `{arch}.attention.head_count`
    pub head_count: PerLayer<u32>,
    /// `{arch}.attention.head_count_kv` (always written, even when equal to `head_count`)
    pub head_count_kv: PerLayer<u32>,
    /// `{arch}.attention.layer_norm_rms_epsilon`
    pub rms_norm_eps: f32,
    /// `{arch}.rope.freq_base`
    pub rope_freq_base: f32,
    /// `{arch}.attention.key_length`
    pub key_length: Option<u32>,
    /// `{arch}.attention.value_length`
    pub value_length: Option<u32>,
    /// `{arch}.vocab_size`
    pub vocab_size: Option<u32>,
    /// `{arch}.rope.dimension_count`
    pub rope_dimension_count: Option<u32>,
    /// `{arch}.attention.sliding_window`
    pub sliding_window: Option<u32>,
}

impl ArchParams {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    /// The keys as llama.cpp expects them.
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let mut v = vec![
            (self.key("context_length"), Value::U32(self.context_length)),
            (
                self.key("embedding_length"),
                Value::U32(self.embedding_length),
            ),
            (self.key("block_count"), Value::U32(self.block_count)),
            (
                self.key("feed_forward_length"),
                self.feed_forward_length.to_value(),
            ),
            (self.key("attention.head_count"), self.head_count.to_value()),
            (
                self.key("attention.head_count_kv"),
                self.head_count_kv.to_value(),
            ),
            (self.key("rope.freq_base"), Value::F32(self.rope_freq_base)),
            (
                self.key("attention.layer_norm_rms_epsilon"),
                Value::F32(self.rms_norm_eps),
            ),
        ];
        let opts = [
            ("attention.key_length", self.key_length),
            ("attention.value_length", self.value_length),
            ("vocab_size", self.vocab_size),
            ("rope.dimension_count", self.rope_dimension_count),
            ("attention.sliding_window", self.sliding_window),
        ];
        for (k, val) in opts {
            if let Some(x) = val {
                v.push((self.key(k), Value::U32(x)));
            }
        }
        v
    }

    /// Reads the keys of `general.architecture` from a metadata map.
    pub fn from_metadata(m: &Metadata) -> Result<Self> {
        let arch = m.get_str("general.architecture")?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let per_layer = |s: &str| -> Result<PerLayer<u32>> {
            let key = k(s);
            let v = m
                .get(&key)
                .ok_or_else(|| Error::MissingKey { key: key.clone() })?;
            PerLayer::from_value(&key, v)
        };
        let head_count = per_layer("attention.head_count")?;
        let head_count_kv = match m.get(&k("attention.head_count_kv")) {
            Some(v) => PerLayer::from_value(&k("attention.head_count_kv"), v)?,
            None => head_count.clone(),
        };
        Ok(ArchParams {
            context_length: m.get_u32(&k("context_length"))?,
            embedding_length: m.get_u32(&k("embedding_length"))?,
            block_count: m.get_u32(&k("block_count"))?,
            feed_forward_length: per_layer("feed_forward_length")?,
            head_count,
            head_count_kv,
            rms_norm_eps: m.get_f32(&k("attention.layer_norm_rms_epsilon"))?,
            rope_freq_base: m.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0),
            key_length: m.opt_u32(&k("attention.key_length"))?,
            value_length: m.opt_u32(&k("attention.value_length"))?,
            vocab_size: m.opt_u32(&k("vocab_size"))?,
            rope_dimension_count: m.opt_u32(&k("rope.dimension_count"))?,
            sliding_window: m.opt_u32(&k("attention.sliding_window"))?,
            arch,
        })
    }

    /// Reads the parameters of an open file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        Self::from_metadata(f.metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ArchParams {
        ArchParams {
            arch: "llama".into(),
            context_length: 2048,
            embedding_length: 64,
            block_count: 3,
            feed_forward_length: PerLayer::Layers(vec![128, 96, 128]),
            head_count: PerLayer::Uniform(4),
            head_count_kv: PerLayer::Uniform(2),
            rms_norm_eps: 1e-5,
            rope_freq_base: 10000.0,
            key_length: None,
            value_length: None,
            vocab_size: Some(100),
            rope_dimension_count: Some(16),
            sliding_window: None,
        }
    }

    #[test]
    fn arch_params_round_trip_with_per_layer_arrays() {
        let p = params();
        let mut m: Metadata = GeneralMeta::new("llama", Some("t".into()))
            .with_file_type(LlamaFileType::MostlyQ4_K_M)
            .to_metadata()
            .into_iter()
            .collect();
        m.extend(p.to_metadata());
        assert_eq!(
            m.get("llama.feed_forward_length"),
            Some(&Value::Array(Array::I32(vec![128, 96, 128])))
        );
        assert_eq!(m.get("llama.attention.head_count_kv"), Some(&Value::U32(2)));
        assert_eq!(ArchParams::from_metadata(&m).ok(), Some(p));
        let g = GeneralMeta::from_metadata(&m).ok();
        assert_eq!(g.as_ref().and_then(|g| g.quantization_version), Some(2));
        assert_eq!(
            g.and_then(|g| g.file_type),
            Some(LlamaFileType::MostlyQ4_K_M)
        );
    }

    #[test]
    fn missing_key_names_arch_prefix() {
        let mut m = Metadata::new();
        m.insert("general.architecture", "qwen2");
        match ArchParams::from_metadata(&m) {
            Err(Error::MissingKey { key }) => assert!(key.starts_with("qwen2."), "{key}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn file_type_ids() {
        assert_eq!(
            LlamaFileType::from_id(15),
            Some(LlamaFileType::MostlyQ4_K_M)
        );
        assert_eq!(LlamaFileType::MostlyBF16.id(), 32);
        assert_eq!(LlamaFileType::MostlyQ8_0.id(), 7);
        assert!(!LlamaFileType::MostlyF16.is_quantized());
        assert_eq!(LlamaFileType::from_id(4), None);
        assert_eq!(
            PerLayer::Layers(vec![3u32, 3]).simplified(),
            PerLayer::Uniform(3)
        );
    }
}
