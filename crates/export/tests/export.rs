//! The exporters' files, checked without the runtimes: the ONNX graph is well formed (every value defined
//! before use, every external tensor inside the data file, per-layer KV shapes), the MLX folder loads back
//! into shuku-model with the same logits, padding of uneven widths is exact, and bad input is refused
//! with a typed error and nothing written. `runtimes.rs` checks the same folders in ONNX Runtime,
//! onnxruntime-genai and mlx-lm.

mod common;

use common::{base_dir, max_abs_diff, model_logits, opts, uneven};
use std::collections::HashSet;
use std::path::Path;

use candle_core::Device;
use prost::Message;
use shuku_export::onnx::proto::ModelProto;
use shuku_export::{ExportError, ExportOptions, Exporter, MlxExporter, OnnxExporter, WeightBits};
use shuku_model::{Llama, LlamaConfig, ModelError};

fn tiny_config(model_type: &str) -> LlamaConfig {
    LlamaConfig::from_json_str(
        &format!(
            r#"{{"model_type":"{model_type}","vocab_size":4096,"hidden_size":128,"num_hidden_layers":3,
                "num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"intermediate_size":256,
                "rms_norm_eps":1e-5,"max_position_embeddings":64,"tie_word_embeddings":true,
                "bos_token_id":0,"eos_token_id":0}}"#
        ),
        "tiny",
    )
    .unwrap()
}

fn tiny(model_type: &str) -> Llama {
    Llama::random(tiny_config(model_type), 7, &Device::Cpu).unwrap()
}

fn read_onnx(dir: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(dir.join("model.onnx")).unwrap().as_slice()).unwrap()
}

/// Every node input is a graph input, an initializer or an earlier node's output; every external tensor
/// lies inside the data file. Returns the op types in order.
fn check_graph(dir: &Path) -> Vec<String> {
    let model = read_onnx(dir);
    let graph = model.graph.unwrap();
    let data_len = std::fs::metadata(dir.join("model.onnx.data"))
        .unwrap()
        .len();
    let mut defined: HashSet<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    for t in &graph.initializer {
        defined.insert(t.name.clone());
        if t.data_location == 1 {
            let get = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
                    .unwrap()
            };
            assert_eq!(get("location"), "model.onnx.data");
            let (offset, length): (u64, u64) = (
                get("offset").parse().unwrap(),
                get("length").parse().unwrap(),
            );
            assert!(
                offset + length <= data_len,
                "{} runs past the data file",
                t.name
            );
            assert_eq!(offset % 4096, 0, "{} is not aligned", t.name);
        }
    }
    for n in &graph.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            assert!(
                defined.contains(i),
                "{} reads {i} before it is defined",
                n.name
            );
        }
        defined.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    for o in &graph.output {
        assert!(
            defined.contains(&o.name),
            "output {} is never produced",
            o.name
        );
    }
    graph.node.iter().map(|n| n.op_type.clone()).collect()
}

#[test]
fn onnx_graph_is_well_formed_for_every_precision() {
    let model = tiny("llama");
    let root = tempfile::tempdir().unwrap();
    for bits in [
        WeightBits::F32,
        WeightBits::F16,
        WeightBits::Q8,
        WeightBits::Q4,
    ] {
        let out = root.path().join(format!("onnx-{}", bits.bits()));
        let report = OnnxExporter::new(opts(bits))
            .export(&model, &base_dir(), &out)
            .unwrap();
        let ops = check_graph(&out);
        let count = |op: &str| ops.iter().filter(|o| *o == op).count();
        assert_eq!(count("GroupQueryAttention"), 3);
        assert_eq!(count("SkipSimplifiedLayerNormalization"), 6);
        if bits.quantized().is_some() {
            // qkv, o, gate, up, down per layer, and the LM head.
            assert_eq!(count("MatMulNBits"), 3 * 5 + 1);
            assert_eq!(count("GatherBlockQuantized"), 1);
        } else {
            assert_eq!(count("MatMulNBits"), 0);
        }
        for f in [
            "genai_config.json",
            "tokenizer.json",
            "model.onnx",
            "model.onnx.data",
        ] {
            assert!(out.join(f).is_file(), "{f} missing");
        }
        assert!(report.bits_per_weight() > 0.0);
        println!("{report}");
    }
}

#[test]
fn onnx_keeps_each_layers_widths() {
    let model = uneven(&tiny("llama"));
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("onnx");
    OnnxExporter::new(opts(WeightBits::Q4))
        .export(&model, &base_dir(), &out)
        .unwrap();
    check_graph(&out);
    let graph = read_onnx(&out).graph.unwrap();
    let kv_dim = |name: &str| -> i64 {
        let input = graph.input.iter().find(|i| i.name == name).unwrap();
        let shape = input
            .r#type
            .as_ref()
            .unwrap()
            .tensor_type
            .as_ref()
            .unwrap()
            .shape
            .as_ref()
            .unwrap();
        match shape.dim[1].value {
            Some(shuku_export::onnx::proto::DimensionValue::DimValue(v)) => v,
            _ => panic!("symbolic kv dim"),
        }
    };
    assert_eq!(
        [0, 1, 2].map(|i| kv_dim(&format!("past_key_values.{i}.key"))),
        [2, 1, 2]
    );
}

#[test]
fn mlx_float_export_loads_back_with_the_same_logits() {
    let root = tempfile::tempdir().unwrap();
    let tokens = [1u32, 50, 7, 300, 12, 9];
    for (label, model) in [
        ("uniform", tiny("llama")),
        ("uneven", uneven(&tiny("llama"))),
    ] {
        let out = root.path().join(label);
        let report = MlxExporter::new(opts(WeightBits::F32))
            .export(&model, &base_dir(), &out)
            .unwrap();
        // An unquantized MLX folder is an HF folder: shuku-model reads it back.
        let back = Llama::from_hf_dir(&out, &Device::Cpu).unwrap();
        assert!(back.config().is_uniform());
        let diff = max_abs_diff(
            &model_logits(&model, &tokens),
            &model_logits(&back, &tokens),
        );
        assert!(diff < 1e-4, "{label}: logits differ by {diff}");
        assert_eq!(
            report.notes.is_empty(),
            label == "uniform",
            "{:?}",
            report.notes
        );
    }
}

#[test]
fn mlx_quantized_weights_dequantize_close_to_the_originals() {
    let model = tiny("llama");
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("mlx");
    MlxExporter::new(opts(WeightBits::Q4))
        .export(&model, &base_dir(), &out)
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization"]["bits"], 4);
    assert_eq!(config["quantization"]["group_size"], 64);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = "model.layers.1.mlp.down_proj";
    let w = st.tensor(&format!("{name}.weight")).unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::U32);
    assert_eq!(w.shape(), &[128, 256 * 4 / 32]);
    let f16s = |n: &str| -> Vec<f32> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    };
    let (scales, biases) = (
        f16s(&format!("{name}.scales")),
        f16s(&format!("{name}.biases")),
    );
    let words: Vec<u32> = w
        .data()
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let original = model
        .weight(&format!("{name}.weight"))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut err = 0f64;
    let mut norm = 0f64;
    for (i, &x) in original.iter().enumerate() {
        let q = (words[i / 8] >> ((i % 8) * 4)) & 15;
        let deq = scales[i / 64] * q as f32 + biases[i / 64];
        err += ((deq - x) as f64).powi(2);
        norm += (x as f64).powi(2);
    }
    let rel = (err / norm).sqrt();
    assert!(rel < 0.12, "relative RMS error {rel}");
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let onnx = OnnxExporter::new(ExportOptions::default());

    let err = onnx.export(&tiny("qwen3"), &base_dir(), &out).unwrap_err();
    assert!(matches!(err, ExportError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("qwen3"), "{err}");

    let mut config = tiny_config("llama");
    for l in &mut config.layers {
        l.intermediate_size = 96;
    }
    let odd = Llama::random(config, 1, &Device::Cpu).unwrap();
    let mlx = MlxExporter::new(ExportOptions::default());
    let err = mlx.export(&odd, &base_dir(), &out).unwrap_err();
    match &err {
        ExportError::GroupSize {
            tensor,
            width,
            group_size,
        } => {
            assert!(tensor.contains("down_proj"), "{err}");
            assert_eq!((*width, *group_size), (96, 64));
        }
        other => panic!("{other}"),
    }
    let err = OnnxExporter::new(ExportOptions {
        group_size: Some(48),
        ..ExportOptions::default()
    })
    .export(&tiny("llama"), &base_dir(), &out)
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Option {
                option: "group size",
                ..
            }
        ),
        "{err}"
    );
    assert!(WeightBits::from_bits(5, shuku_export::Format::Mlx).is_err());

    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep").unwrap();
    let err = mlx.export(&tiny("llama"), &base_dir(), &out).unwrap_err();
    assert!(
        matches!(err, ExportError::Model(ModelError::OutputExists { .. })),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("mine.txt")).unwrap(),
        "keep"
    );

    // A tokenizer folder without a tokenizer fails after the weights are written: nothing may remain.
    let empty = root.path().join("no-tokenizer");
    std::fs::create_dir(&empty).unwrap();
    let fresh = root.path().join("fresh");
    assert!(onnx.export(&tiny("llama"), &empty, &fresh).is_err());
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!fresh.exists());
    assert!(
        left.iter().all(|n| !n.starts_with(".shuku")),
        "left behind: {left:?}"
    );
}
