//! HF folder save/load, per-layer widths, and the typed errors for bad configs and tensors.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use shuku_model::{ConfigProblem, LayerDims, Llama, LlamaConfig, ModelError};

fn assert_same_weights(a: &Llama, b: &Llama) {
    let (ta, tb) = (a.named_tensors(), b.named_tensors());
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let d = (xa - xb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{na}");
    }
}

#[test]
fn save_then_load_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    for (tied, bias) in [(true, false), (false, true)] {
        let model = Llama::random(common::tiny_config(tied, bias), 5, &Device::Cpu).unwrap();
        let out = tmp.path().join(format!("m-{tied}-{bias}"));
        model.save_hf_dir(&out, None, false).unwrap();
        let back = Llama::from_hf_dir(&out, &Device::Cpu).unwrap();
        assert_eq!(back.config(), model.config());
        assert_same_weights(&model, &back);
        // Uniform models are plain HF: no shuku-only keys.
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert!(json.get("shuku_layers").is_none());
        assert_eq!(json["architectures"][0], "LlamaForCausalLM");
        assert_eq!(json["num_key_value_heads"], 2);
    }
}

#[test]
fn saving_refuses_to_overwrite_unless_asked_and_copies_the_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Llama::random(common::tiny_config(true, false), 1, &Device::Cpu).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap(); // an empty directory is fine
    model
        .save_hf_dir(&out, Some(&common::glassllm_dir()), false)
        .unwrap();
    assert!(out.join("tokenizer.json").is_file());
    let err = model.save_hf_dir(&out, None, false).unwrap_err();
    assert!(matches!(err, ModelError::OutputExists { .. }), "{err}");
    let other = Llama::random(common::tiny_config(true, false), 2, &Device::Cpu).unwrap();
    other.save_hf_dir(&out, None, true).unwrap();
    assert_same_weights(&other, &Llama::from_hf_dir(&out, &Device::Cpu).unwrap());
    assert!(
        !out.join("tokenizer.json").exists(),
        "overwrite replaces the whole folder"
    );
    // No staging folders left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("out")]);
}

#[test]
fn glassllm_f16_folder_round_trips_through_f32() {
    let model = Llama::from_hf_dir(common::glassllm_dir(), &Device::Cpu).unwrap();
    assert_eq!(model.config().n_params(), 852_608);
    let tmp = tempfile::tempdir().unwrap();
    model
        .save_hf_dir(tmp.path().join("g"), Some(&common::glassllm_dir()), false)
        .unwrap();
    let back = Llama::from_hf_dir(tmp.path().join("g"), &Device::Cpu).unwrap();
    assert_same_weights(&model, &back);
}

/// transformers 5 writes `rope_parameters` where transformers 4 wrote `rope_theta` + `rope_scaling`; both
/// must give the same model (reading only one layout silently turned a Llama 3 into a different model).
#[test]
fn both_rope_config_layouts_describe_the_same_model() {
    let base = r#""model_type": "llama", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 8"#;
    let legacy = LlamaConfig::from_json_str(
        &format!(
            r#"{{{base}, "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}}}"#
        ),
        "v4.json",
    )
    .unwrap();
    let v5 = LlamaConfig::from_json_str(
        &format!(
            r#"{{{base}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}}}"#
        ),
        "v5.json",
    )
    .unwrap();
    assert_eq!(legacy, v5);
    assert_eq!(v5.rope_theta, 500000.0);
    assert!(
        matches!(v5.rope_scaling, shuku_model::RopeScaling::Llama3 { factor, .. } if factor == 8.0)
    );
    // The saved config reads back to the same model.
    assert_eq!(
        LlamaConfig::from_json(&v5.to_hf_json(), "saved.json").unwrap(),
        v5
    );
}

#[test]
fn per_layer_widths_round_trip() {
    let mut config = common::tiny_config(false, false);
    config.layers = vec![
        LayerDims {
            n_heads: 4,
            n_kv_heads: 2,
            intermediate_size: 40,
            sliding: false,
        },
        LayerDims {
            n_heads: 2,
            n_kv_heads: 1,
            intermediate_size: 24,
            sliding: false,
        },
    ];
    let model = Llama::random(config.clone(), 9, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model
        .save_hf_dir(tmp.path().join("p"), None, false)
        .unwrap();
    let back = Llama::from_hf_dir(tmp.path().join("p"), &Device::Cpu).unwrap();
    assert_eq!(back.config().layers, config.layers);
    assert_same_weights(&model, &back);
    let tokens = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let d = (model.forward(&tokens, None).unwrap() - back.forward(&tokens, None).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
}

#[test]
fn per_layer_arrays_are_accepted() {
    let c = LlamaConfig::from_json_str(
        r#"{"model_type": "qwen2", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": [4, 2], "num_key_value_heads": 2, "intermediate_size": [8, 12]}"#,
        "arrays.json",
    )
    .unwrap();
    assert_eq!(
        c.layers[1],
        LayerDims {
            n_heads: 2,
            n_kv_heads: 2,
            intermediate_size: 12,
            sliding: false,
        }
    );
    assert_eq!(c.head_dim, 4);
    assert!(c.attention_bias, "qwen2 always has q/k/v biases");
}

fn config_err(json: &str) -> (String, String, ConfigProblem) {
    match LlamaConfig::from_json_str(json, "bad/config.json") {
        Err(ModelError::Config {
            file,
            field,
            problem,
        }) => (file, field, problem),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn bad_configs_are_typed_errors_naming_file_and_field() {
    let base =
        r#""vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 2, "intermediate_size": 8"#;
    let (file, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 3}}"#
    ));
    assert_eq!(
        (file.as_str(), field.as_str()),
        ("bad/config.json", "num_attention_heads")
    );
    assert!(matches!(
        problem,
        ConfigProblem::NotDivisible {
            value: 3,
            into: 16,
            ..
        }
    ));

    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 4, "num_key_value_heads": 3}}"#
    ));
    assert_eq!(field, "num_key_value_heads");
    assert!(matches!(
        problem,
        ConfigProblem::NotDivisible {
            value: 3,
            into: 4,
            ..
        }
    ));

    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "gpt2", {base}, "num_attention_heads": 4}}"#
    ));
    assert_eq!(field, "model_type");
    assert_eq!(problem, ConfigProblem::UnknownModelType("gpt2".into()));

    let (_, field, problem) =
        config_err(r#"{"model_type": "llama", "vocab_size": 10, "num_hidden_layers": 2}"#);
    assert_eq!(
        (field.as_str(), problem),
        ("hidden_size", ConfigProblem::Missing)
    );

    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 4, "num_key_value_heads": 0}}"#
    ));
    assert_eq!(
        (field.as_str(), problem),
        ("num_key_value_heads", ConfigProblem::Zero)
    );

    let (_, field, problem) = config_err(
        r#"{"model_type": "llama", "vocab_size": 0, "hidden_size": 16, "num_hidden_layers": 2,
            "intermediate_size": 8, "num_attention_heads": 4}"#,
    );
    assert_eq!(
        (field.as_str(), problem),
        ("vocab_size", ConfigProblem::Zero)
    );

    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": "four"}}"#
    ));
    assert_eq!(field, "num_attention_heads");
    assert!(matches!(problem, ConfigProblem::WrongType(_)));

    let (_, field, problem) = config_err(
        r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": [8, 8, 8]}"#,
    );
    assert_eq!(field, "intermediate_size");
    assert_eq!(
        problem,
        ConfigProblem::LayerCount {
            expected: 2,
            found: 3
        }
    );

    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 4, "rope_scaling": {{"type": "linear"}}}}"#
    ));
    assert_eq!(
        (field.as_str(), problem),
        ("rope_scaling.factor", ConfigProblem::Missing)
    );

    // Every RoPE type is implemented or refused, in both config layouts, never ignored.
    for (layout, key) in [
        ("rope_scaling", "rope_scaling.rope_type"),
        ("rope_parameters", "rope_parameters.rope_type"),
    ] {
        let (_, field, problem) = config_err(&format!(
            r#"{{"model_type": "llama", {base}, "num_attention_heads": 4,
                "{layout}": {{"rope_type": "yarn", "factor": 4.0}}}}"#
        ));
        assert_eq!(field, key);
        assert!(
            matches!(problem, ConfigProblem::Unsupported(ref s) if s.contains("yarn")),
            "{problem:?}"
        );
    }
    let (_, field, _) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 4,
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "beta": 2}}}}"#
    ));
    assert_eq!(field, "rope_scaling.beta");
    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 4,
            "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}}}}"#
    ));
    assert_eq!(
        (field.as_str(), problem),
        ("rope_parameters.low_freq_factor", ConfigProblem::Missing)
    );
    // A key that may change the computation and is not understood is refused by name.
    let (_, field, problem) = config_err(&format!(
        r#"{{"model_type": "llama", {base}, "num_attention_heads": 4, "logit_scale": 0.5}}"#
    ));
    assert_eq!(
        (field.as_str(), problem),
        ("logit_scale", ConfigProblem::NotUnderstood)
    );
    let (_, field, _) = config_err(&format!(
        r#"{{"model_type": "qwen2", {base}, "num_attention_heads": 4, "use_sliding_window": true}}"#
    ));
    assert_eq!(field, "use_sliding_window");

    assert!(matches!(
        LlamaConfig::from_json_str("{not json", "broken.json"),
        Err(ModelError::Json { file, .. }) if file == "broken.json"
    ));
    assert!(matches!(
        LlamaConfig::from_file("/nonexistent/config.json"),
        Err(ModelError::Io { .. })
    ));
}

fn tensors_of(model: &Llama) -> HashMap<String, Tensor> {
    model.named_tensors().into_iter().collect()
}

#[test]
fn missing_wrong_shape_and_unexpected_tensors_are_typed_errors() {
    let config = common::tiny_config(false, false);
    let model = Llama::random(config.clone(), 4, &Device::Cpu).unwrap();

    let mut t = tensors_of(&model);
    t.remove("model.layers.1.mlp.up_proj.weight");
    match Llama::from_named_tensors(config.clone(), t) {
        Err(ModelError::MissingTensor { tensor, .. }) => {
            assert_eq!(tensor, "model.layers.1.mlp.up_proj.weight")
        }
        other => panic!("{other:?}"),
    }

    let mut t = tensors_of(&model);
    t.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        Tensor::zeros((8, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    match Llama::from_named_tensors(config.clone(), t) {
        Err(ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
        }) => {
            assert_eq!(tensor, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!((expected, found), (vec![16, 32], vec![8, 32]));
        }
        other => panic!("{other:?}"),
    }

    let mut t = tensors_of(&model);
    t.insert(
        "model.layers.9.mlp.up_proj.weight".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        Llama::from_named_tensors(config.clone(), t),
        Err(ModelError::UnexpectedTensor { tensor, .. }) if tensor == "model.layers.9.mlp.up_proj.weight"
    ));

    // On disk: a config whose widths disagree with the weights names the safetensors file.
    let tmp = tempfile::tempdir().unwrap();
    model
        .save_hf_dir(tmp.path().join("m"), None, false)
        .unwrap();
    let cfg_path = tmp.path().join("m/config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"intermediate_size\": 40", "\"intermediate_size\": 48");
    std::fs::write(&cfg_path, text).unwrap();
    assert!(matches!(
        Llama::from_hf_dir(tmp.path().join("m"), &Device::Cpu),
        Err(ModelError::ShapeMismatch { tensor, .. }) if tensor == "model.layers.0.mlp.gate_proj.weight"
    ));
    std::fs::remove_file(tmp.path().join("m/model.safetensors")).unwrap();
    assert!(matches!(
        Llama::from_hf_dir(tmp.path().join("m"), &Device::Cpu),
        Err(ModelError::Io { .. })
    ));
}

#[test]
fn sharded_folders_load() {
    let model = Llama::random(common::tiny_config(false, false), 8, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    model.save_hf_dir(dir.join("single"), None, false).unwrap();
    std::fs::create_dir(dir.join("sharded")).unwrap();
    std::fs::copy(
        dir.join("single/config.json"),
        dir.join("sharded/config.json"),
    )
    .unwrap();
    // Split into two shards: embeddings + layer 0 in one, the rest in the other, stored as f16 and bf16.
    let mut weight_map = serde_json::Map::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (name, t) in model.named_tensors() {
        let first = name.starts_with("model.embed") || name.starts_with("model.layers.0.");
        let (file, dtype) = if first {
            ("s-1.safetensors", candle_core::DType::F16)
        } else {
            ("s-2.safetensors", candle_core::DType::BF16)
        };
        weight_map.insert(name.clone(), file.into());
        if first {
            a.push((name, t.to_dtype(dtype).unwrap()))
        } else {
            b.push((name, t.to_dtype(dtype).unwrap()))
        }
    }
    candle_core::safetensors::save(
        &a.into_iter().collect::<HashMap<_, _>>(),
        dir.join("sharded/s-1.safetensors"),
    )
    .unwrap();
    candle_core::safetensors::save(
        &b.into_iter().collect::<HashMap<_, _>>(),
        dir.join("sharded/s-2.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sharded/model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let back = Llama::from_hf_dir(dir.join("sharded"), &Device::Cpu).unwrap();
    for ((n, x), (_, y)) in model.named_tensors().iter().zip(back.named_tensors()) {
        let d = (x - &y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 2e-3, "{n}: {d}"); // bf16 rounding of values ~0.02-1
    }
}
