//! Rotary position embedding variants: how each family turns a position into rotation angles.
//!
//! HF writes RoPE parameters in two layouts: `transformers` 4 uses top-level `rope_theta` plus an optional
//! `rope_scaling` object, `transformers` 5 a single `rope_parameters` object holding `rope_theta` and the
//! scaling fields (or, for models with two attention kinds, one such object per layer type under
//! `full_attention` / `sliding_attention`). Both are read here into one [`RopeScaling`], so a model cannot
//! change meaning with the version of the library that saved it. Every scaling type is either implemented
//! or refused with the field named; none is ignored.

use serde_json::{Map, Value};

use super::fields::Fields;
use super::ModelType;
use crate::error::{ConfigProblem, Result};

/// How rotation frequencies are modified from the plain `θ^(-2i/d)`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (HF `linear`; llama.cpp `rope.scaling.type = linear`).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's per-frequency scaling: long wavelengths divided by `factor`, short ones kept, a smooth
    /// ramp between (llama.cpp stores the divisors as `rope_freqs.weight`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are fully scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
    /// Phi-3's LongRoPE: one divisor per frequency, the `short` set while the sequence fits the original
    /// context and the `long` set beyond it, and cos/sin scaled by `attention_factor`.
    LongRope {
        /// Divisors used up to `original_max_position_embeddings` positions.
        short_factor: Vec<f64>,
        /// Divisors used beyond it.
        long_factor: Vec<f64>,
        /// Context the model was pre-trained with.
        original_max_position_embeddings: usize,
        /// Multiplier of cos and sin.
        attention_factor: f64,
    },
}

/// The RoPE settings of a config: base frequencies and scaling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeSettings {
    /// Base of the (global) layers.
    pub theta: f64,
    /// Base of sliding-window layers, when the family gives them their own (Gemma 3).
    pub local_theta: Option<f64>,
    /// Scaling of the (global) layers; sliding-window layers are never scaled.
    pub scaling: RopeScaling,
}

/// Which object holds the RoPE fields, and under which name errors should cite it.
struct Source<'a> {
    obj: &'a Map<String, Value>,
    field: String,
}

impl Source<'_> {
    fn name(&self, key: &str) -> String {
        format!("{}.{key}", self.field)
    }
}

fn positive(f: &Fields<'_>, field: &str, v: Option<&Value>) -> Result<Option<f64>> {
    match v.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            Some(_) => Err(f.err(field, ConfigProblem::Zero)),
            None => Err(f.err(field, ConfigProblem::WrongType("a number"))),
        },
    }
}

fn required(f: &Fields<'_>, src: &Source<'_>, key: &str) -> Result<f64> {
    positive(f, &src.name(key), src.obj.get(key))?
        .ok_or_else(|| f.err(&src.name(key), ConfigProblem::Missing))
}

fn factor_list(f: &Fields<'_>, src: &Source<'_>, key: &str, half: usize) -> Result<Vec<f64>> {
    let field = src.name(key);
    let items = match src.obj.get(key) {
        None | Some(Value::Null) => return Err(f.err(&field, ConfigProblem::Missing)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(f.err(&field, ConfigProblem::WrongType("an array of numbers"))),
    };
    if items.len() != half {
        return Err(f.err(
            &field,
            ConfigProblem::Unsupported(format!(
                "{} entries, expected head_dim / 2 = {half}",
                items.len()
            )),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            positive(f, &format!("{field}[{i}]"), Some(v))?
                .ok_or_else(|| f.err(&field, ConfigProblem::WrongType("an array of numbers")))
        })
        .collect()
}

impl RopeSettings {
    /// Reads both HF layouts. `head_dim` sizes LongRoPE's factor lists; `max_positions` is
    /// `max_position_embeddings` (LongRoPE's default attention factor depends on it).
    pub fn parse(
        f: &Fields<'_>,
        model_type: ModelType,
        head_dim: usize,
        max_positions: usize,
    ) -> Result<Self> {
        let params = match f.present("rope_parameters") {
            Some(Value::Object(o)) => Some(o),
            Some(_) => return Err(f.err("rope_parameters", ConfigProblem::WrongType("an object"))),
            None => None,
        };
        let scaling = match f.present("rope_scaling") {
            Some(Value::Object(o)) => Some(o),
            Some(_) => return Err(f.err("rope_scaling", ConfigProblem::WrongType("an object"))),
            None => None,
        };
        if params.is_some() && scaling.is_some() {
            // Two descriptions of one thing could disagree; which one a reader believes is a guess.
            return Err(f.err(
                "rope_scaling",
                ConfigProblem::Unsupported(
                    "given together with `rope_parameters`; keep one of the two layouts".into(),
                ),
            ));
        }
        // Per-layer-type parameters (transformers 5, models with sliding-window layers).
        let (global, local) = match params {
            Some(p) if p.contains_key("full_attention") || p.contains_key("sliding_attention") => {
                let sub = |k: &str| match p.get(k) {
                    Some(Value::Object(o)) => Ok(Some(o)),
                    None | Some(Value::Null) => Ok(None),
                    Some(_) => Err(f.err(
                        &format!("rope_parameters.{k}"),
                        ConfigProblem::WrongType("an object"),
                    )),
                };
                if let Some(k) = p
                    .keys()
                    .find(|k| *k != "full_attention" && *k != "sliding_attention")
                {
                    return Err(f.err(
                        &format!("rope_parameters.{k}"),
                        ConfigProblem::Unsupported("unknown layer type".into()),
                    ));
                }
                let full = sub("full_attention")?.ok_or_else(|| {
                    f.err("rope_parameters.full_attention", ConfigProblem::Missing)
                })?;
                let global = Source {
                    obj: full,
                    field: "rope_parameters.full_attention".into(),
                };
                let local = sub("sliding_attention")?.map(|o| Source {
                    obj: o,
                    field: "rope_parameters.sliding_attention".into(),
                });
                (Some(global), local)
            }
            Some(p) => (
                Some(Source {
                    obj: p,
                    field: "rope_parameters".into(),
                }),
                None,
            ),
            None => (
                scaling.map(|o| Source {
                    obj: o,
                    field: "rope_scaling".into(),
                }),
                None,
            ),
        };
        let in_params = |src: &Option<Source<'_>>, key: &str| -> Result<Option<f64>> {
            match src {
                Some(s) if s.field.starts_with("rope_parameters") => {
                    positive(f, &s.name(key), s.obj.get(key))
                }
                _ => Ok(None),
            }
        };
        let theta = match in_params(&global, "rope_theta")? {
            Some(t) => t,
            None => {
                positive(f, "rope_theta", f.present("rope_theta"))?.unwrap_or(match model_type {
                    ModelType::Gemma3 => 1_000_000.0,
                    _ => 10_000.0,
                })
            }
        };
        let local_theta = match (&local, model_type) {
            (Some(s), _) => Some(required(f, s, "rope_theta")?),
            (None, ModelType::Gemma3) => Some(
                positive(f, "rope_local_base_freq", f.present("rope_local_base_freq"))?
                    .unwrap_or(10_000.0),
            ),
            (None, _) => None,
        };
        if let Some(s) = &local {
            let kind = rope_type(f, s)?;
            if kind != "default" {
                return Err(f.err(
                    &s.name("rope_type"),
                    ConfigProblem::Unsupported(format!(
                        "{kind:?} on sliding-window layers (only default)"
                    )),
                ));
            }
        }
        let scaling = match &global {
            None => RopeScaling::None,
            Some(s) => parse_scaling(f, s, model_type, head_dim, max_positions)?,
        };
        Ok(RopeSettings {
            theta,
            local_theta,
            scaling,
        })
    }
}

/// `rope_type` (or the older `type`); `default` when absent.
fn rope_type(f: &Fields<'_>, src: &Source<'_>) -> Result<String> {
    let v = src
        .obj
        .get("rope_type")
        .filter(|v| !v.is_null())
        .or_else(|| src.obj.get("type").filter(|v| !v.is_null()));
    match v {
        None => Ok("default".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(f.err(&src.name("rope_type"), ConfigProblem::WrongType("a string"))),
    }
}

fn parse_scaling(
    f: &Fields<'_>,
    src: &Source<'_>,
    model_type: ModelType,
    head_dim: usize,
    max_positions: usize,
) -> Result<RopeScaling> {
    let kind = rope_type(f, src)?;
    let known: &[&str] = match kind.as_str() {
        "default" => &[],
        "linear" => &["factor"],
        "llama3" => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        "longrope" | "su" => &[
            "short_factor",
            "long_factor",
            "original_max_position_embeddings",
            "attention_factor",
            "factor",
        ],
        other => {
            return Err(f.err(
                &src.name("rope_type"),
                ConfigProblem::Unsupported(format!(
                    "{other:?} (supported: default, linear, llama3, longrope)"
                )),
            ))
        }
    };
    // Every field of the object must be understood: an unread field could change the angles.
    // transformers 5 moves `partial_rotary_factor` in here; only full rotation is implemented.
    if let Some(v) = src
        .obj
        .get("partial_rotary_factor")
        .filter(|v| !v.is_null())
    {
        if v.as_f64() != Some(1.0) {
            return Err(f.err(
                &src.name("partial_rotary_factor"),
                ConfigProblem::Unsupported(format!("{v} (only 1.0: rotation of the whole head)")),
            ));
        }
    }
    for key in src.obj.keys() {
        let general =
            ["rope_type", "type", "rope_theta", "partial_rotary_factor"].contains(&key.as_str());
        if !general && !known.contains(&key.as_str()) && !src.obj[key].is_null() {
            return Err(f.err(
                &src.name(key),
                ConfigProblem::Unsupported(format!("not understood for rope_type {kind:?}")),
            ));
        }
    }
    let allowed = match kind.as_str() {
        "default" => true,
        "linear" => !matches!(model_type, ModelType::Phi3),
        "llama3" => matches!(model_type, ModelType::Llama | ModelType::Mistral),
        _ => model_type == ModelType::Phi3,
    };
    if !allowed {
        return Err(f.err(
            &src.name("rope_type"),
            ConfigProblem::Unsupported(format!(
                "{kind:?} for model_type {:?}",
                model_type.as_str()
            )),
        ));
    }
    let original = |f: &Fields<'_>| -> Result<usize> {
        let field = src.name("original_max_position_embeddings");
        match src.obj.get("original_max_position_embeddings") {
            Some(v) if !v.is_null() => f.to_usize(&field, v),
            // Phi-3 configs keep it at the top level.
            _ => match f.usize_opt("original_max_position_embeddings")? {
                Some(n) => Ok(n),
                None => Err(f.err(&field, ConfigProblem::Missing)),
            },
        }
        .and_then(|n| {
            if n == 0 {
                Err(f.err(&field, ConfigProblem::Zero))
            } else {
                Ok(n)
            }
        })
    };
    Ok(match kind.as_str() {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: required(f, src, "factor")?,
        },
        "llama3" => {
            let scaling = RopeScaling::Llama3 {
                factor: required(f, src, "factor")?,
                low_freq_factor: required(f, src, "low_freq_factor")?,
                high_freq_factor: required(f, src, "high_freq_factor")?,
                original_max_position_embeddings: original(f)?,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            } = scaling
            {
                if high_freq_factor <= low_freq_factor {
                    return Err(f.err(
                        &src.name("high_freq_factor"),
                        ConfigProblem::Unsupported("must be greater than low_freq_factor".into()),
                    ));
                }
            }
            scaling
        }
        _ => {
            let half = head_dim / 2;
            let original = original(f)?;
            let attention_factor = match positive(
                f,
                &src.name("attention_factor"),
                src.obj.get("attention_factor"),
            )? {
                Some(a) => a,
                None => longrope_attention_factor(max_positions, original),
            };
            RopeScaling::LongRope {
                short_factor: factor_list(f, src, "short_factor", half)?,
                long_factor: factor_list(f, src, "long_factor", half)?,
                original_max_position_embeddings: original,
                attention_factor,
            }
        }
    })
}

/// LongRoPE's default cos/sin multiplier, `sqrt(1 + ln(s) / ln(original))` for the context extension
/// `s = max / original` (1 when the context is not extended).
pub(crate) fn longrope_attention_factor(max_positions: usize, original: usize) -> f64 {
    let scale = max_positions as f64 / original as f64;
    if scale <= 1.0 {
        1.0
    } else {
        (1.0 + scale.ln() / (original as f64).ln()).sqrt()
    }
}

impl RopeScaling {
    /// Llama 3's divisor of each of the `head_dim / 2` frequencies of base `theta`: what llama.cpp stores
    /// as `rope_freqs.weight`. `None` for the other kinds.
    pub fn llama3_divisors(&self, head_dim: usize, theta: f64) -> Option<Vec<f64>> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = *self
        else {
            return None;
        };
        let old = original_max_position_embeddings as f64;
        let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
        Some(
            (0..head_dim / 2)
                .map(|i| {
                    let freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        1.0 / ((1.0 - smooth) / factor + smooth)
                    }
                })
                .collect(),
        )
    }

    /// The rotation frequencies of a layer of this scaling with base `theta`, and the multiplier of cos
    /// and sin, for a pass whose positions end before `end` (LongRoPE picks its factor set by it).
    pub fn frequencies(&self, head_dim: usize, theta: f64, end: usize) -> (Vec<f64>, f64) {
        let plain: Vec<f64> = (0..head_dim / 2)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        match self {
            RopeScaling::None => (plain, 1.0),
            RopeScaling::Linear { factor } => (plain.iter().map(|f| f / factor).collect(), 1.0),
            RopeScaling::Llama3 { .. } => {
                let div = self.llama3_divisors(head_dim, theta).unwrap_or_default();
                (plain.iter().zip(&div).map(|(f, d)| f / d).collect(), 1.0)
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let set = if end > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                (
                    plain.iter().zip(set).map(|(f, d)| f / d).collect(),
                    *attention_factor,
                )
            }
        }
    }
}

/// The RoPE scaling a GGUF file describes: `{arch}.rope.scaling.type` (`linear` with its factor), Llama 3's
/// `rope_freqs.weight`, Phi-3's `rope_factors_long/short.weight` with `rope.scaling.attn_factor` and
/// `rope.scaling.original_context_length`. Scaling types llama.cpp knows but this model does not
/// implement (YaRN) are refused.
pub(crate) fn rope_from_gguf(
    file: &shuku_gguf::GgufFile,
    arch: &str,
    head_dim: usize,
    theta: f32,
) -> Result<RopeScaling> {
    use crate::error::ModelError;
    let key = |k: &str| format!("{arch}.{k}");
    let err = |field: String, problem| ModelError::config("<gguf>", field, problem);
    let f32_tensor = |name: &str| -> Result<Option<Vec<f64>>> {
        match file.tensor(name) {
            Err(_) => Ok(None),
            Ok(view) => {
                let t = view.to_tensor(&candle_core::Device::Cpu)?;
                let v: Vec<f32> = t
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                if v.len() != head_dim / 2 {
                    return Err(err(
                        name.to_string(),
                        ConfigProblem::Unsupported(format!(
                            "{} values, expected head_dim / 2 = {}",
                            v.len(),
                            head_dim / 2
                        )),
                    ));
                }
                Ok(Some(v.into_iter().map(f64::from).collect()))
            }
        }
    };
    let kind = file.opt_str(&key("rope.scaling.type"))?;
    match kind {
        None | Some("none") => {}
        Some("linear") => {
            let factor = file.opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
            if factor <= 0.0 || !factor.is_finite() {
                return Err(err(key("rope.scaling.factor"), ConfigProblem::Zero));
            }
            if factor != 1.0 {
                return Ok(RopeScaling::Linear {
                    factor: super::super::gguf::f32_to_f64(factor),
                });
            }
        }
        Some("longrope") if arch == "phi3" => {}
        Some(other) => {
            return Err(err(
                key("rope.scaling.type"),
                ConfigProblem::Unsupported(format!("{other:?} (supported: none, linear)")),
            ))
        }
    }
    if let (Some(long), Some(short)) = (
        f32_tensor("rope_factors_long.weight")?,
        f32_tensor("rope_factors_short.weight")?,
    ) {
        let original = file
            .opt_u32(&key("rope.scaling.original_context_length"))?
            .ok_or_else(|| {
                err(
                    key("rope.scaling.original_context_length"),
                    ConfigProblem::Missing,
                )
            })? as usize;
        let attention_factor = file
            .opt_f32(&key("rope.scaling.attn_factor"))?
            .map_or(1.0, super::super::gguf::f32_to_f64);
        return Ok(RopeScaling::LongRope {
            short_factor: short,
            long_factor: long,
            original_max_position_embeddings: original,
            attention_factor,
        });
    }
    if let Some(divisors) = f32_tensor("rope_freqs.weight")? {
        return llama3_from_divisors(&divisors, head_dim, f64::from(theta)).ok_or_else(|| {
            err(
                "rope_freqs.weight".into(),
                ConfigProblem::Unsupported(
                    "frequency divisors that no Llama 3 RoPE scaling produces".into(),
                ),
            )
        });
    }
    Ok(RopeScaling::None)
}

/// Recovers Llama 3 scaling parameters from the divisors llama.cpp stores. Only two ratios are determined
/// by the divisors, so `low_freq_factor` is taken as 1 (as in every Llama 3.x release) and the others are
/// fitted; the result is accepted only if it reproduces every divisor.
fn llama3_from_divisors(divisors: &[f64], head_dim: usize, theta: f64) -> Option<RopeScaling> {
    let factor = divisors.iter().cloned().fold(f64::NAN, f64::max);
    if factor.is_nan() || factor <= 1.0 {
        return None;
    }
    let x =
        |i: usize| theta.powf(-((2 * i) as f64) / head_dim as f64) / (2.0 * std::f64::consts::PI);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    let smooth: Vec<(f64, f64)> = divisors
        .iter()
        .enumerate()
        .filter(|(_, &d)| !close(d, 1.0) && !close(d, factor))
        .map(|(i, &d)| (x(i), (1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor)))
        .collect();
    let (high, original) = match smooth.as_slice() {
        [(x1, s1), .., (x2, s2)] => {
            let k = (x1 - x2) / (x2 * s1 - x1 * s2);
            (1.0 + k, (1.0 + s1 * k) / x1)
        }
        [(x1, s1)] => (4.0, (3.0 * s1 + 1.0) / x1),
        [] => {
            // The boundary lies between the last kept and the first fully scaled frequency.
            let first_scaled = divisors.iter().position(|&d| close(d, factor))?;
            (4.0, 1.0 / x(first_scaled) * 0.999)
        }
    };
    let candidate = RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: (high * 1e4).round() / 1e4,
        original_max_position_embeddings: original.round().max(1.0) as usize,
    };
    let again = candidate.llama3_divisors(head_dim, theta)?;
    again
        .iter()
        .zip(divisors)
        .all(|(a, b)| close(*a, *b))
        .then_some(candidate)
}
