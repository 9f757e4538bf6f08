//! Structured pruning: what is removed, that removal is exact, and that GQA stays GQA.

use candle_core::{Device, Tensor};
use shuku_model::{Llama, LlamaConfig};
use shuku_prune::{
    calibration_samples, plan_structured, GqaPolicy, Importance, PruneError, Pruner, Scope,
    StructuredConfig, StructuredSpec,
};
use shuku_testkit::TestRng;

fn config(layers: usize) -> LlamaConfig {
    LlamaConfig::from_json_str(
        &format!(
            r#"{{"model_type": "llama", "vocab_size": 96, "hidden_size": 32,
            "num_hidden_layers": {layers}, "num_attention_heads": 6, "num_key_value_heads": 2,
            "head_dim": 8, "intermediate_size": 64, "attention_bias": true}}"#
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

fn logits(model: &Llama, tokens: &[u32]) -> Vec<f32> {
    model.logits_vec(tokens).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn spec(s: &str) -> StructuredSpec {
    s.parse().unwrap()
}

#[test]
fn removal_is_exact_for_every_kind_and_importance() {
    let model = Llama::random(config(3), 1, &Device::Cpu).unwrap();
    let cal = samples(4, 24, 2);
    let probe: Vec<u32> = (0..20).map(|i| (i * 11 % 96) as u32).collect();
    for importance in [
        Importance::L1,
        Importance::L2,
        Importance::Activation,
        Importance::Taylor,
    ] {
        for gqa in [GqaPolicy::EvenPerGroup, GqaPolicy::WholeGroups] {
            let mut c = StructuredConfig::new(spec("ffn=0.25,heads=0.3"));
            c.importance = importance;
            c.gqa = gqa;
            let plan = plan_structured(&model, &c, &cal).unwrap();
            let small = model.shrink(&plan).unwrap();
            let masked = model.masked_copy(&plan).unwrap();
            let d = max_diff(&logits(&small, &probe), &logits(&masked, &probe));
            assert!(d < 1e-4, "{importance:?} {gqa:?}: {d}");
            for dims in &small.config().layers {
                assert_eq!(dims.intermediate_size, 48, "{importance:?}");
                assert_eq!(dims.n_heads % dims.n_kv_heads, 0);
            }
        }
    }
}

#[test]
fn gqa_groups_stay_uniform() {
    let model = Llama::random(config(2), 3, &Device::Cpu).unwrap();
    let cal = samples(2, 16, 4);
    // 12 heads in all, a third of them: one per group in both layers, or one whole group of 3.
    let even = Pruner::structured(spec("heads=0.34"))
        .calibration(cal.clone())
        .run(Llama::random(config(2), 3, &Device::Cpu).unwrap())
        .unwrap();
    for d in &even.model.config().layers {
        assert_eq!((d.n_heads, d.n_kv_heads), (4, 2));
    }
    let whole = Pruner::structured(spec("heads=0.25"))
        .gqa(GqaPolicy::WholeGroups)
        .calibration(cal)
        .run(model)
        .unwrap();
    let widths: Vec<(usize, usize)> = whole
        .model
        .config()
        .layers
        .iter()
        .map(|d| (d.n_heads, d.n_kv_heads))
        .collect();
    // A quarter of 12 heads is 3: one layer loses one whole group of 3 query heads.
    assert_eq!(
        widths.iter().filter(|w| **w == (3, 1)).count(),
        1,
        "{widths:?}"
    );
    assert_eq!(
        widths.iter().filter(|w| **w == (6, 2)).count(),
        1,
        "{widths:?}"
    );
}

#[test]
fn the_least_influential_layer_goes() {
    let model = Llama::random(config(4), 5, &Device::Cpu).unwrap();
    // Layer 2 adds nothing to the residual stream: its output equals its input.
    for w in ["self_attn.o_proj", "mlp.down_proj"] {
        let name = format!("model.layers.2.{w}.weight");
        let zeros = Tensor::zeros(
            (32, if w.starts_with("mlp") { 64 } else { 48 }),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        model.set_weight(&name, zeros).unwrap();
    }
    let pruned = Pruner::structured(spec("layers=1"))
        .calibration(samples(2, 16, 6))
        .run(model)
        .unwrap();
    assert_eq!(pruned.report.layers_removed, [2]);
    assert_eq!(pruned.model.config().num_hidden_layers(), 3);
}

#[test]
fn rounding_and_global_scope_shape_the_widths() {
    let cal = samples(2, 16, 7);
    let model = Llama::random(config(2), 8, &Device::Cpu).unwrap();
    let pruned = Pruner::structured(spec("ffn=0.3"))
        .round_to(16)
        .calibration(cal.clone())
        .run(model)
        .unwrap();
    for d in &pruned.model.config().layers {
        assert_eq!(d.intermediate_size, 48, "64·0.7 = 44.8 rounds to 48");
    }
    let model = Llama::random(config(3), 9, &Device::Cpu).unwrap();
    let pruned = Pruner::structured(spec("ffn=0.5"))
        .scope(Scope::Global)
        .importance(Importance::L2)
        .run(model)
        .unwrap();
    let total: usize = pruned
        .model
        .config()
        .layers
        .iter()
        .map(|d| d.intermediate_size)
        .sum();
    assert_eq!(total, 96);
}

#[test]
fn iterative_steps_recover_after_each_step() {
    let model = Llama::random(config(3), 10, &Device::Cpu).unwrap();
    let mut calls = Vec::new();
    let pruned = Pruner::structured(spec("ffn=0.5,layers=1"))
        .steps(2)
        .calibration(samples(2, 16, 11))
        .recover(|m: &Llama, step| {
            calls.push((step, m.config().layers[0].intermediate_size));
            Ok(())
        })
        .run(model)
        .unwrap();
    assert_eq!(pruned.model.config().num_hidden_layers(), 2);
    assert!(pruned
        .model
        .config()
        .layers
        .iter()
        .all(|d| d.intermediate_size == 32));
    assert_eq!(calls, [(1, 48), (2, 32)]);
    assert_eq!(pruned.report.layers_removed.len(), 1);
    let err = Pruner::structured(spec("ffn=0.5"))
        .importance(Importance::L1)
        .recover(|_: &Llama, _| Err("out of memory".into()))
        .run(Llama::random(config(2), 12, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(matches!(err, PruneError::Recovery { step: 1, .. }), "{err}");
}

#[test]
fn impossible_requests_are_typed_errors() {
    let cal = samples(2, 16, 13);
    let run = |s: &str| {
        Pruner::structured(spec(s))
            .calibration(cal.clone())
            .run(Llama::random(config(2), 14, &Device::Cpu).unwrap())
            .unwrap_err()
    };
    assert!(matches!(
        run("heads=0.9"),
        PruneError::RemovesEverything { what: "heads", .. }
    ));
    assert!(matches!(
        run("ffn=0.999"),
        PruneError::RemovesEverything { .. }
    ));
    assert!(matches!(
        run("layers=2"),
        PruneError::TooManyLayers {
            asked: 2,
            available: 2
        }
    ));
    assert!(matches!(
        "ffn=1.5".parse::<StructuredSpec>(),
        Err(PruneError::Ratio { .. })
    ));
    let err = Pruner::structured(spec("layers=1"))
        .run(Llama::random(config(2), 15, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(matches!(err, PruneError::NoCalibration { .. }), "{err}");
}
