//! Building a student from a teacher: drop layers, or a fresh (smaller) config with the teacher's
//! weights copied wherever the shapes allow.
//!
//! A student that starts from the teacher's own weights recovers far faster than a random one
//! (the embedding and the kept blocks already speak the teacher's "language"), so every
//! constructor here copies as much as it can and reports what it had to initialise fresh.
//! Tensors are deep-copied: the student's `Var`s never alias the teacher's, so training the
//! student cannot move the teacher.

use std::collections::HashMap;

use candle_core::Tensor;
use shuku_model::{KeptLayer, Llama, LlamaConfig, ShrinkPlan};

use crate::error::{DistillError, Result};

/// Which of the teacher's layers a layer-dropped student keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    /// Every other layer starting at 0 (`0, 2, 4, …`, `ceil(n/2)` layers); when the count is
    /// even the last of them is replaced by the last layer (`0, 2, …, n − 1`), so the block that
    /// feeds the final norm and head is always kept.
    EveryOther,
    /// The first `n` layers (the classic "truncate the stack").
    First(usize),
    /// Exactly these teacher layers, in this order.
    Explicit(Vec<usize>),
}

impl LayerSelection {
    /// Teacher layer indices kept for a teacher with `n_layers` blocks.
    ///
    /// `EveryOther` keeps `ceil(n/2)` layers: `0, 2, …` and, for an even `n`, swaps the last
    /// even index for `n − 1` (the last block shapes the representation the head reads, so
    /// dropping it costs most).
    pub fn indices(&self, n_layers: usize) -> Result<Vec<usize>> {
        let keep = match self {
            LayerSelection::EveryOther => {
                let mut v: Vec<usize> = (0..n_layers).step_by(2).collect();
                if n_layers.is_multiple_of(2) {
                    if let Some(last) = v.last_mut() {
                        *last = n_layers - 1;
                    }
                }
                v
            }
            LayerSelection::First(n) => (0..*n).collect(),
            LayerSelection::Explicit(v) => v.clone(),
        };
        if keep.is_empty() {
            return Err(DistillError::InvalidConfig(
                "a student needs at least one layer".into(),
            ));
        }
        if let Some(&bad) = keep.iter().find(|&&i| i >= n_layers) {
            return Err(DistillError::InvalidConfig(format!(
                "layer {bad} does not exist in a teacher of {n_layers} layers"
            )));
        }
        Ok(keep)
    }
}

/// What a student constructor copied and what it initialised fresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Student tensors copied from the teacher (HF names of the student).
    pub copied: Vec<String>,
    /// Student tensors with no same-shaped teacher counterpart, left at their fresh init.
    pub fresh: Vec<String>,
}

/// A deep copy that shares no storage with `t` (so the student never aliases the teacher).
fn deep_copy(t: &Tensor) -> Result<Tensor> {
    Ok(t.detach().copy()?)
}

/// The teacher's HF tensor name for a student tensor, given the student→teacher layer map.
fn teacher_name(student_name: &str, layer_map: &[usize]) -> Option<String> {
    let Some(rest) = student_name.strip_prefix("model.layers.") else {
        return Some(student_name.to_string());
    };
    let (idx, tail) = rest.split_once('.')?;
    let i: usize = idx.parse().ok()?;
    let t = *layer_map.get(i)?;
    Some(format!("model.layers.{t}.{tail}"))
}

/// A student made of the teacher's layers `selection`, every weight copied.
///
/// This is model surgery that keeps whole layers: a [`ShrinkPlan`] with every head and channel of each
/// selected layer, applied by [`Llama::shrink`] (the same code structured pruning uses), which deep-copies
/// so the student never aliases the teacher.
pub fn drop_layers(teacher: &Llama, selection: &LayerSelection) -> Result<Llama> {
    let tcfg = teacher.config();
    let keep = selection.indices(tcfg.num_hidden_layers())?;
    let plan = ShrinkPlan {
        layers: keep
            .iter()
            .map(|&i| KeptLayer::all(i, &tcfg.layers[i]))
            .collect(),
    };
    Ok(teacher.shrink(&plan)?)
}

/// A student with its own `config` (fewer layers, other widths), initialised randomly with
/// `seed` and then overwritten with the teacher's tensor wherever the names and shapes agree.
///
/// `layer_map[i]` names the teacher layer student layer `i` copies from; student layers beyond
/// the map (or whose shapes differ) stay random. Vocabulary sizes must match, since the student
/// is trained on the teacher's logits.
pub fn from_teacher(
    teacher: &Llama,
    config: LlamaConfig,
    layer_map: &[usize],
    seed: u64,
) -> Result<(Llama, CopyReport)> {
    let tcfg = teacher.config();
    if config.vocab_size != tcfg.vocab_size {
        return Err(DistillError::VocabMismatch {
            what: "student vs teacher vocabulary",
            left: config.vocab_size,
            right: tcfg.vocab_size,
        });
    }
    let fresh = Llama::random(config.clone(), seed, teacher.device())?;
    let mut from_teacher: HashMap<String, Tensor> = teacher.named_tensors().into_iter().collect();
    // A tied teacher has no lm_head; an untied student can start from the embedding.
    if tcfg.tie_word_embeddings && !config.tie_word_embeddings {
        if let Some(e) = from_teacher.get("model.embed_tokens.weight").cloned() {
            from_teacher.insert("lm_head.weight".into(), e);
        }
    }
    let mut report = CopyReport::default();
    let mut tensors = HashMap::new();
    for (name, t) in fresh.named_tensors() {
        let src = teacher_name(&name, layer_map).and_then(|n| from_teacher.get(&n));
        match src {
            Some(s) if s.dims() == t.dims() => {
                tensors.insert(name.clone(), deep_copy(s)?);
                report.copied.push(name);
            }
            _ => {
                tensors.insert(name.clone(), deep_copy(&t)?);
                report.fresh.push(name);
            }
        }
    }
    let student = Llama::from_named_tensors(config, tensors)?;
    Ok((student, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_keeps_first_and_last() {
        assert_eq!(LayerSelection::EveryOther.indices(4).unwrap(), vec![0, 3]);
        assert_eq!(
            LayerSelection::EveryOther.indices(5).unwrap(),
            vec![0, 2, 4]
        );
        assert_eq!(LayerSelection::EveryOther.indices(30).unwrap().len(), 15);
        assert_eq!(LayerSelection::EveryOther.indices(1).unwrap(), vec![0]);
        assert!(LayerSelection::Explicit(vec![7]).indices(4).is_err());
        assert!(LayerSelection::First(0).indices(4).is_err());
    }

    #[test]
    fn teacher_names_follow_the_layer_map() {
        let map = [0, 3];
        assert_eq!(
            teacher_name("model.layers.1.mlp.up_proj.weight", &map).as_deref(),
            Some("model.layers.3.mlp.up_proj.weight")
        );
        assert_eq!(
            teacher_name("model.norm.weight", &map).as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(teacher_name("model.layers.2.x", &map), None);
    }
}
