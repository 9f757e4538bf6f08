//! Model surgery: shrinking heads (GQA-aware), FFN channels and layers is exact (equal to zeroing the removed
//! pieces), saves and loads, rejects bad plans with typed errors, and never aliases the source model.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use shuku_model::{KeptLayer, LayerDims, Llama, LlamaConfig, ModelError, ShrinkPlan};

/// `layers` layers of `heads` query heads over `kv` KV heads, head_dim 8 (explicit: hidden 32 is not
/// heads × 8), FFN 40.
fn gqa_config(heads: usize, kv: usize, layers: usize, bias: bool, tied: bool) -> LlamaConfig {
    let json = format!(
        r#"{{"model_type": "llama", "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": {layers},
            "num_attention_heads": {heads}, "num_key_value_heads": {kv}, "head_dim": 8,
            "intermediate_size": 40, "rms_norm_eps": 1e-5, "max_position_embeddings": 64,
            "tie_word_embeddings": {tied}, "attention_bias": {bias}}}"#
    );
    LlamaConfig::from_json_str(&json, "surgery/config.json").unwrap()
}

/// 6 heads / 2 KV heads (groups of 3), 3 layers, with q/k/v biases.
fn config() -> LlamaConfig {
    gqa_config(6, 2, 3, true, false)
}

/// A random model with weights ten times `Llama::random`'s (std 0.2), so that every head, channel and layer
/// visibly moves the logits and a wrong row or column cannot hide under the tolerance.
fn model(config: LlamaConfig, seed: u64) -> Llama {
    let base = Llama::random(config.clone(), seed, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = base
        .named_tensors()
        .into_iter()
        .map(|(n, t)| {
            let t = if n.contains("norm") {
                t.copy().unwrap()
            } else {
                (t * 10.0).unwrap()
            };
            (n, t)
        })
        .collect();
    Llama::from_named_tensors(config, tensors).unwrap()
}

fn logits(m: &Llama) -> Tensor {
    let tokens = Tensor::new(
        &[[1u32, 5, 7, 9, 3, 2, 11, 30], [60, 4, 4, 8, 17, 0, 42, 13]],
        &Device::Cpu,
    )
    .unwrap();
    m.forward(&tokens, None).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn values(m: &Llama, name: &str) -> Vec<f32> {
    m.named_tensors()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .1
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn layer(source: usize, kv_heads: &[usize], heads: &[usize], channels: &[usize]) -> KeptLayer {
    KeptLayer {
        source,
        kv_heads: kv_heads.to_vec(),
        heads: heads.to_vec(),
        channels: channels.to_vec(),
    }
}

fn all(config: &LlamaConfig, source: usize) -> KeptLayer {
    KeptLayer::all(source, &config.layers[source])
}

/// FFN channels 0..40 without every third one: non-contiguous, ascending.
fn some_channels() -> Vec<usize> {
    (0..40).filter(|c| c % 3 != 1).collect()
}

/// Asserts `shrink(plan)` computes what `masked_copy(plan)` computes, and that the plan matters at all.
fn assert_shrink_is_exact(m: &Llama, plan: &ShrinkPlan, what: &str) {
    let shrunk = m.shrink(plan).unwrap();
    let masked = m.masked_copy(plan).unwrap();
    let (ls, lm, lo) = (logits(&shrunk), logits(&masked), logits(m));
    let d = max_diff(&ls, &lm);
    assert!(d < 1e-4, "{what}: shrunk vs masked logits differ by {d}");
    let effect = max_diff(&lm, &lo);
    assert!(
        effect > 1e-2,
        "{what}: the removal barely changes the logits ({effect}), so the test would not notice a bug"
    );
    assert_eq!(shrunk.config(), &plan.shrunk_config(m.config()).unwrap());
}

#[test]
fn shrink_equals_masked_copy_for_each_kind_of_removal() {
    let cfg = config();
    let m = model(cfg.clone(), 1);
    let even_heads = layer(0, &[0, 1], &[0, 2, 3, 5], &(0..40).collect::<Vec<_>>());
    let whole_group = layer(1, &[1], &[3, 5], &(0..40).collect::<Vec<_>>());
    let channels = KeptLayer {
        channels: some_channels(),
        ..all(&cfg, 2)
    };
    let cases = [
        (
            "query heads removed evenly per group",
            ShrinkPlan {
                layers: vec![even_heads.clone(), all(&cfg, 1), all(&cfg, 2)],
            },
        ),
        (
            "a whole KV group removed with its queries",
            ShrinkPlan {
                layers: vec![all(&cfg, 0), whole_group.clone(), all(&cfg, 2)],
            },
        ),
        (
            "FFN channels removed",
            ShrinkPlan {
                layers: vec![all(&cfg, 0), all(&cfg, 1), channels.clone()],
            },
        ),
        (
            "a layer dropped",
            ShrinkPlan {
                layers: vec![all(&cfg, 0), all(&cfg, 2)],
            },
        ),
        (
            "everything at once",
            ShrinkPlan {
                layers: vec![
                    KeptLayer {
                        channels: (5..30).collect(),
                        ..even_heads
                    },
                    KeptLayer {
                        channels: some_channels(),
                        ..whole_group
                    },
                ],
            },
        ),
    ];
    for (what, plan) in &cases {
        assert_shrink_is_exact(&m, plan, what);
    }
    // Without biases and with tied embeddings the same holds.
    let m = model(gqa_config(6, 2, 3, false, true), 2);
    for (what, plan) in &cases {
        assert_shrink_is_exact(&m, plan, what);
    }
}

#[test]
fn removing_a_middle_kv_group_reindexes_the_query_heads() {
    // 8 heads over 4 KV heads (groups of 2): keep KV heads 0, 2, 3 with one query head each, picked so that
    // kept query heads are not at the start of their groups. New head i must read new KV head i.
    let cfg = gqa_config(8, 4, 2, true, false);
    let m = model(cfg.clone(), 3);
    let plan = ShrinkPlan {
        layers: vec![
            layer(0, &[0, 2, 3], &[1, 4, 7], &some_channels()),
            layer(1, &[1, 3], &[2, 3, 6, 7], &[0, 39]),
        ],
    };
    assert_shrink_is_exact(&m, &plan, "middle KV group removed");
    let shrunk = m.shrink(&plan).unwrap();
    assert_eq!(
        shrunk.config().layers,
        vec![
            LayerDims {
                n_heads: 3,
                n_kv_heads: 3,
                intermediate_size: 27,
                sliding: false,
            },
            LayerDims {
                n_heads: 4,
                n_kv_heads: 2,
                intermediate_size: 2,
                sliding: false,
            },
        ]
    );
    // Rows of kept heads are copied whole and in order: new q head 1 is source head 4.
    let src = values(&m, "model.layers.0.self_attn.q_proj.weight");
    let new = values(&shrunk, "model.layers.0.self_attn.q_proj.weight");
    let row = 32; // hidden
    assert_eq!(new[8 * row..16 * row], src[4 * 8 * row..5 * 8 * row]);
    let src_k = values(&m, "model.layers.0.self_attn.k_proj.bias");
    let new_k = values(&shrunk, "model.layers.0.self_attn.k_proj.bias");
    assert_eq!(new_k[16..24], src_k[24..32]);
}

#[test]
fn identity_plan_reproduces_logits_exactly() {
    for (bias, tied) in [(true, false), (false, true)] {
        let cfg = gqa_config(6, 2, 3, bias, tied);
        let m = model(cfg.clone(), 4);
        let plan = ShrinkPlan::identity(&cfg);
        assert_eq!(plan.layers.len(), 3);
        let shrunk = m.shrink(&plan).unwrap();
        assert_eq!(shrunk.config(), &cfg);
        assert_eq!(max_diff(&logits(&shrunk), &logits(&m)), 0.0);
        let masked = m.masked_copy(&plan).unwrap();
        assert_eq!(max_diff(&logits(&masked), &logits(&m)), 0.0);
        for (name, _) in m.named_tensors() {
            assert_eq!(values(&shrunk, &name), values(&m, &name), "{name}");
        }
    }
}

#[test]
fn shrink_may_reorder_and_repeat_layers() {
    // Layer dropping for distillation may list source layers in any order, repeats included: each new layer
    // is then exactly its source block.
    let cfg = config();
    let m = model(cfg.clone(), 5);
    let order = [2, 0, 2];
    let plan = ShrinkPlan {
        layers: order.iter().map(|&s| all(&cfg, s)).collect(),
    };
    let shrunk = m.shrink(&plan).unwrap();
    let tokens = Tensor::new(&[[3u32, 1, 4, 1, 5, 9]], &Device::Cpu).unwrap();
    let mut x = m.embed(&tokens).unwrap();
    for &s in &order {
        x = m.forward_block(s, &x, 1, 6, None).unwrap();
    }
    let expected = m.head(&x, 1, 6, None).unwrap();
    let got = shrunk.forward(&tokens, None).unwrap();
    assert!(max_diff(&expected, &got) < 1e-5);
}

#[test]
fn shrunk_config_has_the_kept_widths_and_round_trips_through_hf() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config();
    let m = model(cfg.clone(), 6);

    // Non-uniform: per-layer widths are saved as `shuku_layers`.
    let plan = ShrinkPlan {
        layers: vec![
            layer(0, &[0, 1], &[0, 2, 3, 5], &some_channels()),
            layer(2, &[1], &[3, 4, 5], &(0..40).collect::<Vec<_>>()),
        ],
    };
    let shrunk_cfg = plan.shrunk_config(&cfg).unwrap();
    assert_eq!(shrunk_cfg.head_dim, 8);
    assert_eq!(shrunk_cfg.hidden_size, 32);
    assert_eq!(
        shrunk_cfg.layers,
        vec![
            LayerDims {
                n_heads: 4,
                n_kv_heads: 2,
                intermediate_size: 27,
                sliding: false,
            },
            LayerDims {
                n_heads: 3,
                n_kv_heads: 1,
                intermediate_size: 40,
                sliding: false,
            },
        ]
    );
    let shrunk = m.shrink(&plan).unwrap();
    assert_eq!(shrunk.config(), &shrunk_cfg);
    let dir = tmp.path().join("uneven");
    shrunk.save_hf_dir(&dir, None, false).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["shuku_layers"].as_array().unwrap().len(), 2);
    assert_eq!(json["head_dim"], 8);
    let back = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config(), &shrunk_cfg);
    assert_eq!(max_diff(&logits(&back), &logits(&shrunk)), 0.0);

    // Uniform: the same cut in every layer gives a standard HF config.
    let cut = layer(0, &[0, 1], &[0, 1, 3, 4], &(0..30).collect::<Vec<_>>());
    let plan = ShrinkPlan {
        layers: (0..3)
            .map(|source| KeptLayer {
                source,
                ..cut.clone()
            })
            .collect(),
    };
    let shrunk = m.shrink(&plan).unwrap();
    assert!(shrunk.config().is_uniform());
    let dir = tmp.path().join("uniform");
    shrunk.save_hf_dir(&dir, None, false).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(json.get("shuku_layers").is_none());
    assert_eq!(json["num_attention_heads"], 4);
    assert_eq!(json["num_key_value_heads"], 2);
    assert_eq!(json["intermediate_size"], 30);
    assert_eq!(json["head_dim"], 8);
    let back = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config(), shrunk.config());
    assert_eq!(max_diff(&logits(&back), &logits(&shrunk)), 0.0);
}

/// The plan layer and message of an `InvalidPlan` error; panics on any other result.
fn invalid_plan(r: Result<impl std::fmt::Debug, ModelError>) -> (usize, String) {
    match r {
        Err(ModelError::InvalidPlan { layer, problem }) => (layer, problem),
        other => panic!("expected InvalidPlan, got {other:?}"),
    }
}

#[test]
fn invalid_plans_are_typed_errors() {
    let cfg = config();
    let m = model(cfg.clone(), 7);
    let full: Vec<usize> = (0..40).collect();
    let with = |l: KeptLayer| ShrinkPlan {
        layers: vec![all(&cfg, 0), l],
    };
    let cases: Vec<(&str, ShrinkPlan, usize, &str)> = vec![
        ("empty plan", ShrinkPlan { layers: vec![] }, 0, "no layers"),
        (
            "unknown source layer",
            with(layer(3, &[0], &[0], &[0])),
            1,
            "source layer 3 does not exist",
        ),
        (
            "KV head out of range",
            with(layer(1, &[0, 2], &[0, 3], &full)),
            1,
            "KV heads index 2 is out of range",
        ),
        (
            "query head out of range",
            with(layer(1, &[0, 1], &[0, 6], &full)),
            1,
            "query heads index 6 is out of range",
        ),
        (
            "channel out of range",
            with(layer(1, &[0, 1], &[0, 3], &[0, 40])),
            1,
            "FFN channels index 40 is out of range",
        ),
        (
            "unsorted query heads",
            with(layer(1, &[0, 1], &[3, 0], &full)),
            1,
            "query heads must be strictly ascending",
        ),
        (
            "unsorted KV heads",
            with(layer(1, &[1, 0], &[0, 3], &full)),
            1,
            "KV heads must be strictly ascending",
        ),
        (
            "repeated channel",
            with(layer(1, &[0, 1], &[0, 3], &[1, 1, 2])),
            1,
            "FFN channels must be strictly ascending",
        ),
        (
            "no query heads",
            with(layer(1, &[0], &[], &full)),
            1,
            "keeps no query heads",
        ),
        (
            "no KV heads",
            with(layer(1, &[], &[0], &full)),
            1,
            "keeps no KV heads",
        ),
        (
            "no channels",
            with(layer(1, &[0, 1], &[0, 3], &[])),
            1,
            "keeps no FFN channels",
        ),
        (
            "query head of a removed KV head",
            with(layer(1, &[0], &[0, 3], &full)),
            1,
            "query head 3 reads KV head 1, which is not kept",
        ),
        (
            "unequal group sizes",
            with(layer(1, &[0, 1], &[0, 1, 3], &full)),
            1,
            "KV head 1 keeps 1 query heads but KV head 0 keeps 2",
        ),
        (
            "a kept KV head with no query heads",
            with(layer(1, &[0, 1], &[0, 1], &full)),
            1,
            "KV head 1 keeps 0 query heads",
        ),
    ];
    for (what, plan, at, message) in &cases {
        for (entry, r) in [
            ("validate", plan.validate(&cfg).map(|_| ())),
            ("shrunk_config", plan.shrunk_config(&cfg).map(|_| ())),
            ("shrink", m.shrink(plan).map(|_| ())),
            ("masked_copy", m.masked_copy(plan).map(|_| ())),
        ] {
            let err = r.as_ref().err().map(|e| e.to_string());
            let (layer, problem) = invalid_plan(r);
            assert_eq!(layer, *at, "{what} ({entry}): {problem}");
            assert!(
                problem.contains(message),
                "{what} ({entry}): {problem:?} lacks {message:?}"
            );
            let display = err.unwrap();
            assert!(
                display.contains(&format!("layer {at}")),
                "{what}: {display}"
            );
        }
    }

    // Reordered or repeated layers shrink fine but have no masked form.
    for (what, order) in [("reordered", [2, 0]), ("repeated", [1, 1])] {
        let plan = ShrinkPlan {
            layers: order.iter().map(|&s| all(&cfg, s)).collect(),
        };
        assert!(m.shrink(&plan).is_ok(), "{what}");
        let (layer, problem) = invalid_plan(m.masked_copy(&plan));
        assert_eq!(layer, 1, "{what}");
        assert!(
            problem.contains("source order without repeats"),
            "{what}: {problem}"
        );
    }
}

#[test]
fn shrink_never_aliases_the_source() {
    let cfg = config();
    let plan = ShrinkPlan {
        layers: vec![
            layer(0, &[0, 1], &[0, 2, 3, 5], &some_channels()),
            all(&cfg, 1),
        ],
    };
    let names = [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
    ];
    type Surgery = fn(&Llama, &ShrinkPlan) -> Result<Llama, ModelError>;
    for make in [Llama::shrink as Surgery, Llama::masked_copy] {
        // Writing the copy leaves the source alone ...
        let source = model(cfg.clone(), 8);
        let copy = make(&source, &plan).unwrap();
        let source_before: Vec<_> = names.iter().map(|n| values(&source, n)).collect();
        let logits_before = logits(&source);
        for (name, t) in copy.named_tensors() {
            if names.contains(&name.as_str()) {
                copy.set_weight(&name, (t.ones_like().unwrap() * 3.0).unwrap())
                    .unwrap();
            }
        }
        for (n, v) in names.iter().zip(&source_before) {
            assert_eq!(&values(&source, n), v, "{n}");
        }
        assert_eq!(max_diff(&logits(&source), &logits_before), 0.0);

        // ... and writing the source leaves the copy alone.
        let copy = make(&source, &plan).unwrap();
        let copy_before: Vec<_> = names.iter().map(|n| values(&copy, n)).collect();
        for (name, t) in source.named_tensors() {
            if names.contains(&name.as_str()) {
                source.set_weight(&name, (&t + 1.0).unwrap()).unwrap();
            }
        }
        for (n, v) in names.iter().zip(&copy_before) {
            assert_eq!(&values(&copy, n), v, "{n}");
        }
    }
}
