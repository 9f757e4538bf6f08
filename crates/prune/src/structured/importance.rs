//! How much each attention head, KV group and FFN channel matters.
//!
//! A structural unit owns a set of weights (a query head: its rows of `q_proj` and columns of
//! `o_proj`; a KV head: its rows of `k_proj` and `v_proj`; an FFN channel: its rows of
//! `gate_proj`/`up_proj` and its column of `down_proj`). Its score sums an element-wise importance
//! over those weights:
//! * [`Importance::L1`] `|w|` and [`Importance::L2`] `√Σw²`: magnitude, no data.
//! * [`Importance::Activation`] `|w|·‖x_j‖₂`: Wanda's score, with `x_j` the input feature the weight
//!   multiplies on calibration text (for `down_proj`, the channel's own activation), so a channel
//!   that is large but rarely active scores low.
//! * [`Importance::Taylor`] `|w · ∂L/∂w|`: the first-order change of the language-model loss on
//!   calibration text when the weight is removed (LLM-Pruner's element-wise Taylor score).

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use shuku_model::{ops, Calibration, CalibrationOptions, Llama};

use crate::error::{PruneError, Result};
use crate::weights::read_weight;

/// The element-wise importance summed over a unit's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Importance {
    /// Sum of `|w|`.
    L1,
    /// `√Σw²`.
    L2,
    /// Sum of `|w|·‖x‖₂` (Wanda-style, from calibration activations).
    #[default]
    Activation,
    /// Sum of `|w·∂L/∂w|` (first-order Taylor, from calibration gradients).
    Taylor,
}

impl Importance {
    /// The name the CLI uses.
    pub fn name(self) -> &'static str {
        match self {
            Importance::L1 => "l1",
            Importance::L2 => "l2",
            Importance::Activation => "activation",
            Importance::Taylor => "taylor",
        }
    }

    /// Whether the scores read calibration data.
    pub fn needs_calibration(self) -> bool {
        matches!(self, Importance::Activation | Importance::Taylor)
    }
}

impl std::str::FromStr for Importance {
    type Err = PruneError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "l1" | "magnitude" => Ok(Importance::L1),
            "l2" => Ok(Importance::L2),
            "activation" | "wanda" => Ok(Importance::Activation),
            "taylor" => Ok(Importance::Taylor),
            _ => Err(PruneError::BadSpec {
                spec: s.to_string(),
                reason: "the importances are l1, l2, activation and taylor".into(),
            }),
        }
    }
}

/// Scores of one layer's units.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerScores {
    /// Per query head: its `q_proj` rows and `o_proj` columns.
    pub heads: Vec<f64>,
    /// Per KV head: its `k_proj` and `v_proj` rows.
    pub kv_heads: Vec<f64>,
    /// Per FFN channel: its `gate_proj`/`up_proj` rows and `down_proj` column.
    pub channels: Vec<f64>,
}

/// What the element-wise importance reads besides the weight.
enum Aux {
    None,
    /// `‖x_j‖₂` per input column.
    ColumnNorms(Vec<f32>),
    /// `∂L/∂w`, row-major like the weight.
    Gradient(Vec<f32>),
}

/// One linear's element-wise importance, row-major.
struct Elements {
    values: Vec<f64>,
    cols: usize,
}

impl Elements {
    fn rows_sum(&self, rows: std::ops::Range<usize>) -> f64 {
        self.values[rows.start * self.cols..rows.end * self.cols]
            .iter()
            .sum()
    }

    fn cols_sum(&self, cols: std::ops::Range<usize>) -> f64 {
        self.values
            .chunks(self.cols)
            .map(|row| row[cols.clone()].iter().sum::<f64>())
            .sum()
    }
}

/// Inputs the scores need, gathered once per scoring.
pub struct ScoreInputs {
    importance: Importance,
    /// Σx² per input column of every linear, for [`Importance::Activation`].
    calibration: Option<Calibration>,
    /// Summed gradients by HF name, for [`Importance::Taylor`].
    gradients: HashMap<String, Vec<f32>>,
}

impl ScoreInputs {
    /// Runs what `importance` needs over `samples` on `model`.
    pub fn gather(model: &Llama, importance: Importance, samples: &[Vec<u32>]) -> Result<Self> {
        if importance.needs_calibration() && samples.iter().all(Vec::is_empty) {
            return Err(PruneError::NoCalibration {
                method: importance.name(),
            });
        }
        let calibration = (importance == Importance::Activation)
            .then(|| Calibration::collect(model, samples, CalibrationOptions::default()))
            .transpose()?;
        let gradients = match importance {
            Importance::Taylor => summed_gradients(model, samples)?,
            _ => HashMap::new(),
        };
        Ok(ScoreInputs {
            importance,
            calibration,
            gradients,
        })
    }

    fn elements(&self, model: &Llama, name: &str) -> Result<Elements> {
        let (w, _, cols) = read_weight(model, name)?;
        let aux = match self.importance {
            Importance::Activation => {
                let stats = self.calibration.as_ref().and_then(|c| c.get(name)).ok_or(
                    PruneError::NoCalibration {
                        method: "activation importance",
                    },
                )?;
                Aux::ColumnNorms(stats.sum_sq.iter().map(|s| s.sqrt() as f32).collect())
            }
            Importance::Taylor => Aux::Gradient(self.gradients.get(name).cloned().ok_or(
                PruneError::NoCalibration {
                    method: "taylor importance",
                },
            )?),
            _ => Aux::None,
        };
        let values = w
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let v = f64::from(v);
                match (&aux, self.importance) {
                    (Aux::ColumnNorms(n), _) => v.abs() * f64::from(n[i % cols]),
                    (Aux::Gradient(g), _) => (v * f64::from(g[i])).abs(),
                    (Aux::None, Importance::L2) => v * v,
                    (Aux::None, _) => v.abs(),
                }
            })
            .collect();
        Ok(Elements { values, cols })
    }

    /// The unit scores of `layer`.
    pub fn layer_scores(&self, model: &Llama, layer: usize) -> Result<LayerScores> {
        let cfg = model.config();
        let dims = cfg.layers[layer];
        let hd = cfg.head_dim;
        let p = format!("model.layers.{layer}.");
        let el = |n: &str| self.elements(model, &format!("{p}{n}.weight"));
        let (q, k, v, o) = (
            el("self_attn.q_proj")?,
            el("self_attn.k_proj")?,
            el("self_attn.v_proj")?,
            el("self_attn.o_proj")?,
        );
        let (gate, up, down) = (
            el("mlp.gate_proj")?,
            el("mlp.up_proj")?,
            el("mlp.down_proj")?,
        );
        let finish = |s: f64| {
            if self.importance == Importance::L2 {
                s.sqrt()
            } else {
                s
            }
        };
        let heads = (0..dims.n_heads)
            .map(|h| {
                let r = h * hd..(h + 1) * hd;
                finish(q.rows_sum(r.clone()) + o.cols_sum(r))
            })
            .collect();
        let kv_heads = (0..dims.n_kv_heads)
            .map(|h| {
                let r = h * hd..(h + 1) * hd;
                finish(k.rows_sum(r.clone()) + v.rows_sum(r))
            })
            .collect();
        let channels = (0..dims.intermediate_size)
            .map(|c| {
                finish(gate.rows_sum(c..c + 1) + up.rows_sum(c..c + 1) + down.cols_sum(c..c + 1))
            })
            .collect();
        Ok(LayerScores {
            heads,
            kv_heads,
            channels,
        })
    }
}

/// `∂L/∂W` of the next-token loss summed over `samples`, for every block linear weight.
fn summed_gradients(model: &Llama, samples: &[Vec<u32>]) -> Result<HashMap<String, Vec<f32>>> {
    let linears: Vec<(String, Var)> = model
        .parameters()
        .into_iter()
        .filter(|(n, _)| {
            n.starts_with("model.layers.") && !n.contains("norm") && n.ends_with(".weight")
        })
        .collect();
    let mut sums: HashMap<String, Tensor> = HashMap::new();
    for sample in samples.iter().filter(|s| s.len() >= 2) {
        let t = sample.len();
        let tokens = Tensor::from_vec(sample[..t - 1].to_vec(), (1, t - 1), model.device())?;
        let targets = Tensor::from_vec(sample[1..].to_vec(), t - 1, model.device())?;
        let logits = model.forward(&tokens, None)?.squeeze(0)?;
        let loss = ops::cross_entropy(&logits, &targets)?;
        let grads = loss.backward()?;
        for (name, var) in &linears {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                let next = match sums.remove(name) {
                    Some(s) => (s + g)?,
                    None => g,
                };
                sums.insert(name.clone(), next);
            }
        }
    }
    sums.into_iter()
        .map(|(n, t)| Ok((n, t.flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}
