//! Every family's switches on tiny random models: HF save/load (Phi-3's fused tensors), GGUF export and
//! import (Gemma's `1 + w` norms, RoPE factor tensors), the KV cache (sliding windows, LongRoPE's factor
//! switch), gradients to every parameter, and exact model surgery (heads, channels, layers).
//! Agreement with `transformers` and llama.cpp is checked in the CLI's conformance tests.

mod common;

use candle_core::{Device, Tensor};
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku_model::{ops, KeptLayer, Llama, LlamaConfig, ModelType, ShrinkPlan};

const BASE: &str = r#""vocab_size": 1024, "hidden_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "rms_norm_eps": 1e-5,
    "bos_token_id": 2, "eos_token_id": 3"#;

/// One config per family, each with its distinctive switches on.
fn families() -> Vec<(&'static str, LlamaConfig)> {
    let cases = [
        (
            "llama3",
            r#""model_type": "llama", "max_position_embeddings": 256, "tie_word_embeddings": false,
               "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                 "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}"#,
        ),
        (
            "mistral",
            r#""model_type": "mistral", "head_dim": 16, "sliding_window": 5, "max_position_embeddings": 256"#,
        ),
        (
            "qwen2",
            r#""model_type": "qwen2", "tie_word_embeddings": true, "rope_theta": 1000000.0,
               "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 21"#,
        ),
        (
            "qwen3",
            r#""model_type": "qwen3", "head_dim": 16, "tie_word_embeddings": true"#,
        ),
        (
            "phi3",
            r#""model_type": "phi3", "max_position_embeddings": 64, "original_max_position_embeddings": 8,
               "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.5],
                                "long_factor": [1.0, 2.0, 3.0, 4.0]}"#,
        ),
        (
            "gemma3",
            r#""model_type": "gemma3_text", "head_dim": 16, "sliding_window": 4, "query_pre_attn_scalar": 16,
               "sliding_window_pattern": 2, "rope_local_base_freq": 10000.0, "rope_theta": 1000000.0,
               "hidden_activation": "gelu_pytorch_tanh""#,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, extra)| {
            let json = format!("{{{BASE}, {extra}}}");
            let c = LlamaConfig::from_json_str(&json, &format!("{name}/config.json"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, c)
        })
        .collect()
}

/// A model whose norms are not all at their neutral value, so that a misplaced norm shows.
fn model(config: &LlamaConfig, seed: u64) -> Llama {
    let m = Llama::random(config.clone(), seed, &Device::Cpu).unwrap();
    for (name, t) in m.named_tensors() {
        if name.ends_with("norm.weight") {
            let noise = (Tensor::randn(0f32, 0.3, t.dims(), &Device::Cpu).unwrap() + t).unwrap();
            m.set_weight(&name, noise).unwrap();
        } else {
            m.set_weight(&name, (t * 5.0).unwrap()).unwrap();
        }
    }
    m
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 1000 + 4).collect()
}

fn logits(m: &Llama, ids: &[u32]) -> Tensor {
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    m.forward(&t, None).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn every_family_saves_and_loads_its_hf_layout() {
    for (name, config) in families() {
        let m = model(&config, 1);
        let dir = tempfile::tempdir().unwrap();
        m.save_hf_dir(dir.path().join("m"), None, false).unwrap();
        let files = shuku_model::SafetensorsDir::open(dir.path().join("m")).unwrap();
        let fused = files
            .entries()
            .iter()
            .any(|e| e.name.ends_with("qkv_proj.weight"));
        assert_eq!(fused, config.model_type == ModelType::Phi3, "{name}");
        let back = Llama::from_hf_dir(dir.path().join("m"), &Device::Cpu).unwrap();
        assert_eq!(back.config(), m.config(), "{name}");
        let ids = tokens(12);
        assert_eq!(
            max_diff(&logits(&m, &ids), &logits(&back, &ids)),
            0.0,
            "{name}"
        );
    }
}

#[test]
fn every_family_round_trips_through_gguf() {
    for (name, config) in families() {
        let m = model(&config, 2);
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        m.save_hf_dir(&hf, None, false).unwrap();
        // A vocabulary every family's export copies as it is (a folder imported from a GGUF).
        let vocab = shuku_gguf::GgufFile::open(
            common::shared_dir().join("data/models/glassllm-en-f16.gguf"),
        )
        .unwrap();
        shuku_model::write_vocab_gguf(&vocab, &hf.join(shuku_model::VOCAB_GGUF), false).unwrap();
        let gguf = dir.path().join("m.gguf");
        let options = ExportOptions {
            name: None,
            overwrite: false,
            tokenizer_pre: None,
        };
        convert_hf_dir(
            &hf,
            &gguf,
            &PlainEncoder(OutType::F32),
            &options,
            &mut |_, _, _| {},
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = Llama::from_gguf(&gguf, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        // llama.cpp's llama architecture has no sliding window (its converter drops Mistral's), so the
        // GGUF is the same model only for sequences within the window.
        let n = config
            .sliding_window
            .filter(|_| config.model_type == ModelType::Mistral)
            .unwrap_or(12);
        let ids = tokens(n);
        let d = max_diff(&logits(&m, &ids), &logits(&back, &ids));
        assert!(d < 1e-4, "{name}: {d}");
    }
}

/// Generating with the cache must see exactly what a full forward sees: sliding windows hide the same
/// positions and LongRoPE switches factor sets at the same length.
#[test]
fn the_kv_cache_matches_the_full_forward_in_every_family() {
    for (name, config) in families() {
        let m = model(&config, 3);
        let ids = tokens(14);
        let full = logits(&m, &ids).squeeze(0).unwrap();
        let mut cache = shuku_model::KvCache::new(m.config());
        let t = Tensor::new(&ids[..5], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut rows = vec![m.forward(&t, Some(&mut cache)).unwrap().squeeze(0).unwrap()];
        for &id in &ids[5..] {
            let t = Tensor::new(&[id], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            rows.push(m.forward(&t, Some(&mut cache)).unwrap().squeeze(0).unwrap());
        }
        let stepwise = Tensor::cat(&rows, 0).unwrap();
        // LongRoPE picks its factor set by the sequence length: a full forward past the original
        // context (8 here) uses the long set everywhere, and so does the cache once it is recomputed at
        // the crossing (as transformers' generate does); before the crossing the short set was used.
        let from = if config.model_type == ModelType::Phi3 {
            8
        } else {
            0
        };
        let d = max_diff(
            &full.narrow(0, from, 14 - from).unwrap(),
            &stepwise.narrow(0, from, 14 - from).unwrap(),
        );
        assert!(d < 1e-4, "{name}: {d}");
    }
}

#[test]
fn every_parameter_of_every_family_gets_a_gradient() {
    for (name, config) in families() {
        let m = model(&config, 4);
        let loss = logits(&m, &tokens(9)).sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        for (pname, var) in m.parameters() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{name}: zero gradient for {pname}");
        }
    }
}

/// Activation checkpointing recomputes each layer from its saved input: the gradients are the full
/// graph's in every family (Gemma's post-norms, sliding windows), to the bit for every weight but a
/// tied embedding, whose head gradient the full graph adds into before the lookup's rows of repeated
/// tokens and the checkpointed pass after them (the same sum in another order). The graph-free
/// inference pass gives the full forward's logits.
#[test]
fn checkpointed_gradients_and_inference_logits_equal_the_full_graphs_in_every_family() {
    // Two sequences sharing their tokens, so the embedding lookup's backward adds repeated rows.
    let ids = tokens(7);
    let batch = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .repeat((2, 1))
        .unwrap();
    let targets = Tensor::new(
        &[&ids[1..], &ids[..1], &ids[2..], &ids[..2]].concat()[..],
        &Device::Cpu,
    )
    .unwrap();
    let loss = |h: &Tensor, w: &Tensor| -> candle_core::Result<Tensor> {
        let logits = ops::linear(h, w).map_err(candle_core::Error::wrap)?;
        ops::cross_entropy(&logits, &targets).map_err(candle_core::Error::wrap)
    };
    for (name, config) in families() {
        let m = model(&config, 6);
        let (h, w) = m.forward_head_input(&batch).unwrap();
        let full = loss(&h, &w).unwrap().backward().unwrap();
        let mut losses = Vec::new();
        let checkpointed = m
            .checkpointed_gradients(&batch, &mut |h, w| {
                let l = loss(h, w)?;
                losses.push(l.to_scalar::<f32>()?);
                Ok(l)
            })
            .unwrap();
        assert_eq!(
            losses,
            [loss(&h, &w).unwrap().to_scalar::<f32>().unwrap()],
            "{name}: the loss was computed once, on the same head input"
        );
        let tied = !m.parameters().iter().any(|(n, _)| n == "lm_head.weight");
        for (pname, var) in m.parameters() {
            let a = full.get(var.as_tensor()).unwrap();
            let b = checkpointed
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no checkpointed gradient for {pname}"));
            if tied && pname == "model.embed_tokens.weight" {
                let scale = max_diff(a, &a.zeros_like().unwrap());
                let diff = max_diff(a, b);
                assert!(
                    diff <= 1e-6 * scale,
                    "{name}: {pname} differs by {diff} (scale {scale})"
                );
                continue;
            }
            let (a, b) = (
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{name}: {pname}");
        }
        let inference = m.forward_inference(&batch).unwrap();
        assert!(
            !inference.track_op(),
            "{name}: inference logits carry a graph"
        );
        assert_eq!(
            max_diff(&inference, &m.forward(&batch, None).unwrap()),
            0.0,
            "{name}: inference logits"
        );
    }
}

/// Removing heads, channels and layers equals zeroing them, in every family (Gemma's post-norms of a
/// zeroed sublayer output are zero too).
#[test]
fn surgery_is_exact_in_every_family() {
    for (name, config) in families() {
        let m = model(&config, 5);
        let plan = ShrinkPlan {
            layers: vec![
                KeptLayer {
                    source: 0,
                    kv_heads: vec![1],
                    heads: vec![2, 3],
                    channels: (0..48).step_by(2).collect(),
                },
                KeptLayer::all(2, &config.layers[2]),
            ],
        };
        let small = m.shrink(&plan).unwrap();
        assert_eq!(
            small.config().layers[1].sliding,
            config.layers[2].sliding,
            "{name}"
        );
        let masked = m.masked_copy(&plan).unwrap();
        let ids = tokens(10);
        let d = max_diff(&logits(&small, &ids), &logits(&masked, &ids));
        assert!(d < 1e-4, "{name}: {d}");
    }
}

#[test]
fn gemma3_layer_pattern_and_llama_cpp_limits_are_explicit() {
    let (_, gemma) = families()
        .into_iter()
        .find(|(n, _)| *n == "gemma3")
        .unwrap();
    let sliding: Vec<bool> = gemma.layers.iter().map(|l| l.sliding).collect();
    assert_eq!(sliding, [true, false, true]);
    // llama.cpp's gemma3 scales attention by 1/sqrt(head_dim): another scalar cannot be written.
    let mut other = gemma.clone();
    other.query_pre_attn_scalar = Some(24.0);
    let err = other.gguf_hparams().unwrap_err().to_string();
    assert!(err.contains("query_pre_attn_scalar"), "{err}");
    // Only llama (as deci) carries per-layer widths in llama.cpp.
    let m = model(&gemma, 6);
    let plan = ShrinkPlan {
        layers: vec![
            KeptLayer {
                source: 0,
                kv_heads: vec![0, 1],
                heads: vec![0, 1, 2, 3],
                channels: (0..24).collect(),
            },
            KeptLayer::all(1, &gemma.layers[1]),
            KeptLayer::all(2, &gemma.layers[2]),
        ],
    };
    let uneven = m.shrink(&plan).unwrap();
    let err = uneven.config().gguf_arch().unwrap_err().to_string();
    assert!(err.contains("per-layer widths"), "{err}");
}
