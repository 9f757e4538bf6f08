//! Unstructured and N:M pruning on small models and on synthetic layers.

use candle_core::{Device, Tensor};
use shuku_model::{Llama, LlamaConfig};
use shuku_prune::{
    calibration_samples, sparsegpt_prune, wanda_prune, Method, NmPattern, Owl, PruneError, Pruner,
    Selection, UnstructuredConfig,
};
use shuku_testkit::TestRng;

fn config(hidden: usize, ffn: usize) -> LlamaConfig {
    LlamaConfig::from_json_str(
        &format!(
            r#"{{"model_type": "llama", "vocab_size": 96, "hidden_size": {hidden},
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "intermediate_size": {ffn}}}"#
        ),
        "config.json",
    )
    .unwrap()
}

fn samples(n: usize, seq: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = TestRng(seed);
    let text: Vec<u32> = (0..n * seq).map(|_| rng.int(0, 95) as u32).collect();
    calibration_samples(&text, n, seq).unwrap()
}

fn weights(model: &Llama) -> Vec<(String, Vec<f32>, usize)> {
    model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| {
            let cols = *t.dims().last().unwrap();
            (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), cols)
        })
        .collect()
}

fn is_block_linear(name: &str) -> bool {
    name.starts_with("model.layers.") && name.ends_with("proj.weight")
}

#[test]
fn every_method_reaches_the_sparsity_and_leaves_embeddings_and_norms_alone() {
    let cal = samples(6, 32, 1);
    for method in [Method::Magnitude, Method::Wanda, Method::SparseGpt] {
        let model = Llama::random(config(32, 48), 3, &Device::Cpu).unwrap();
        let before = weights(&model);
        let pruned = Pruner::unstructured(method, 0.5)
            .calibration(cal.clone())
            .run(model)
            .unwrap();
        let report = pruned.report.sparsity.clone().unwrap();
        assert_eq!(report.tensors.len(), 3 * 7, "{method:?}");
        for t in &report.tensors {
            assert!(is_block_linear(&t.name), "{}", t.name);
            assert_eq!(t.zeros, t.numel() / 2, "{method:?} {}", t.name);
        }
        for ((name, old, _), (_, new, _)) in before.iter().zip(weights(&pruned.model)) {
            if !is_block_linear(name) {
                assert_eq!(old, &new, "{method:?} changed {name}");
            }
        }
    }
}

#[test]
fn wanda_prunes_the_same_count_in_every_row() {
    let model = Llama::random(config(32, 48), 4, &Device::Cpu).unwrap();
    let pruned = Pruner::unstructured(Method::Wanda, 0.25)
        .calibration(samples(4, 32, 2))
        .run(model)
        .unwrap();
    for (name, w, cols) in weights(&pruned.model) {
        if is_block_linear(&name) {
            for row in w.chunks(cols) {
                assert_eq!(
                    row.iter().filter(|v| **v == 0.0).count(),
                    cols / 4,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn nm_patterns_are_exact_for_every_method() {
    let cal = samples(4, 32, 3);
    for method in [Method::Magnitude, Method::Wanda, Method::SparseGpt] {
        for (n, m) in [(2, 4), (4, 8)] {
            let model = Llama::random(config(32, 48), 5, &Device::Cpu).unwrap();
            let pruned = Pruner::unstructured(method, 0.0)
                .pattern(NmPattern::new(n, m).unwrap())
                .calibration(cal.clone())
                .run(model)
                .unwrap();
            for (name, w, _) in weights(&pruned.model) {
                if is_block_linear(&name) {
                    for group in w.chunks(m) {
                        let zeros = group.iter().filter(|v| **v == 0.0).count();
                        assert_eq!(zeros, n, "{method:?} {n}:{m} {name}");
                    }
                }
            }
        }
    }
}

/// `‖X Wᵀ − X Ŵᵀ‖²` for row-major `x` `[n, cols]` and weights `[rows, cols]`.
fn output_error(x: &[f32], n: usize, w: &[f32], pruned: &[f32], cols: usize) -> f64 {
    let rows = w.len() / cols;
    let mut err = 0.0;
    for t in 0..n {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let d: f64 = (0..cols)
                .map(|c| f64::from(xt[c]) * f64::from(w[r * cols + c] - pruned[r * cols + c]))
                .sum();
            err += d * d;
        }
    }
    err
}

#[test]
fn sparsegpt_reconstructs_a_layer_better_than_wanda_and_wanda_better_than_magnitude() {
    let (n, rows, cols) = (512, 24, 64);
    let mut rng = TestRng(7);
    // Input features of very different scales, correlated through shared factors: the setting in
    // which activations matter (Wanda) and in which compensation pays (SparseGPT).
    let scales: Vec<f32> = (0..cols)
        .map(|c| 0.1 + 4.0 * ((c * 37) % 11) as f32 / 10.0)
        .collect();
    let factors: Vec<f32> = (0..n * 4).map(|_| rng.normal()).collect();
    let mix: Vec<f32> = (0..4 * cols).map(|_| rng.normal()).collect();
    let x: Vec<f32> = (0..n * cols)
        .map(|i| {
            let (t, c) = (i / cols, i % cols);
            let shared: f32 = (0..4).map(|k| factors[t * 4 + k] * mix[k * cols + c]).sum();
            scales[c] * (0.5 * shared + rng.normal())
        })
        .collect();
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
    let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
    let h: Vec<f64> = xt
        .t()
        .unwrap()
        .matmul(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let sum_sq: Vec<f64> = (0..cols).map(|c| h[c * cols + c]).collect();
    for pattern in [None, Some(NmPattern::new(2, 4).unwrap())] {
        let mut config = UnstructuredConfig::new(Method::SparseGpt, 0.5);
        config.pattern = pattern;
        config.block = 16;
        let selection = match pattern {
            Some(p) => Selection::Pattern(p),
            None => Selection::PerRow(0.5),
        };
        let mut magnitude = w.clone();
        let scores: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let rule = match pattern {
            Some(p) => Selection::Pattern(p),
            None => Selection::WholeMatrix(0.5),
        };
        shuku_prune::mask::apply_mask(
            &mut magnitude,
            &shuku_prune::mask::prune_mask(&scores, rows, cols, rule),
        );
        let mut wanda = w.clone();
        wanda_prune(&mut wanda, rows, cols, &sum_sq, selection);
        let mut sparsegpt = w.clone();
        sparsegpt_prune(&mut sparsegpt, rows, cols, &h, &config, 0.5).unwrap();
        let zeros = sparsegpt.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, rows * cols / 2, "{pattern:?}");
        let e_mag = output_error(&x, n, &w, &magnitude, cols);
        let e_wanda = output_error(&x, n, &w, &wanda, cols);
        let e_sgpt = output_error(&x, n, &w, &sparsegpt, cols);
        assert!(
            e_sgpt < e_wanda && e_wanda < e_mag,
            "{pattern:?}: sparsegpt {e_sgpt:.1}, wanda {e_wanda:.1}, magnitude {e_mag:.1}"
        );
    }
}

#[test]
fn owl_varies_layer_sparsity_around_the_target() {
    let model = Llama::random(config(32, 48), 6, &Device::Cpu).unwrap();
    let pruned = Pruner::unstructured(Method::Wanda, 0.5)
        .owl(Owl::default())
        .calibration(samples(4, 32, 4))
        .run(model)
        .unwrap();
    let report = pruned.report.sparsity.unwrap();
    let per_layer: Vec<f64> = report
        .tensors
        .chunks(7)
        .map(|ts| {
            let z: usize = ts.iter().map(|t| t.zeros).sum();
            let n: usize = ts.iter().map(|t| t.numel()).sum();
            z as f64 / n as f64
        })
        .collect();
    let mean = per_layer.iter().sum::<f64>() / 3.0;
    // Rows of 32 and 48 columns round each layer's count down a little.
    assert!((mean - 0.5).abs() < 0.03, "{per_layer:?}");
    assert!(
        per_layer.iter().any(|s| (s - 0.5).abs() > 0.02),
        "OWL left every layer at the target: {per_layer:?}"
    );
}

#[test]
fn bad_requests_are_typed_errors_and_change_nothing() {
    let cal = samples(2, 16, 5);
    for sparsity in [1.0, -0.1, f64::NAN] {
        let model = Llama::random(config(32, 48), 7, &Device::Cpu).unwrap();
        let err = Pruner::unstructured(Method::Magnitude, sparsity)
            .run(model)
            .unwrap_err();
        assert!(matches!(err, PruneError::Ratio { .. }), "{err}");
    }
    // Hidden width 36 is not a multiple of 8: 4:8 cannot tile q_proj's rows.
    let model = Llama::random(config(36, 48), 8, &Device::Cpu).unwrap();
    let err = Pruner::unstructured(Method::Wanda, 0.0)
        .pattern(NmPattern::new(4, 8).unwrap())
        .calibration(cal.clone())
        .run(model)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PruneError::PatternWidth {
                width: 36,
                m: 8,
                ..
            }
        ),
        "{err}"
    );
    let model = Llama::random(config(32, 48), 9, &Device::Cpu).unwrap();
    let err = Pruner::unstructured(Method::SparseGpt, 0.5)
        .run(model)
        .unwrap_err();
    assert!(matches!(err, PruneError::NoCalibration { .. }), "{err}");
    assert!(matches!(
        calibration_samples(&[1, 2, 3], 2, 4),
        Err(PruneError::CalibrationTooShort { .. })
    ));
}
