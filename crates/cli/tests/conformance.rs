//! Conformance of what shuku writes and computes against the peers: llama.cpp's own GGUF reader
//! (gguf-py), its `llama-simple` and `llama-perplexity`, on the real models from `../shared`.
//!
//! These checks need the assets that `scripts/test.sh` installs (`../shared/scripts/fetch-models.sh` and
//! `build-llamacpp.sh`); a missing asset fails the test with the command that provides it. They are
//! `#[ignore]`d so that a plain `cargo test` stays offline and fast; `scripts/test.sh` runs them with
//! `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use shuku_testkit::{asset, llamacpp, python, run, shared_dir as shared};

mod families;

fn shuku() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shuku"))
}

#[test]
#[ignore = "conformance: needs ../shared assets and the venv; run by scripts/test.sh"]
fn converted_glassllm_is_read_by_gguf_py_equal_to_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.gguf");
    let hf = shared().join("data/models/glassllm-en");
    for outtype in ["f16", "f32"] {
        let out = out.with_extension(format!("{outtype}.gguf"));
        convert(&hf, &out, outtype);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/compare_gguf_to_hf.py");
        let said = run(Command::new(python()).arg(script).arg(&out).arg(&hf));
        println!("{}", said.trim());
        assert!(said.contains("tensors of"), "unexpected output: {said}");
    }
}

#[test]
#[ignore = "conformance: needs ../shared assets; run by scripts/test.sh"]
fn converted_glassllm_matches_the_file_llama_cpp_wrote() {
    use shuku_gguf::GgufFile;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.gguf");
    run(shuku()
        .arg("convert")
        .arg(shared().join("data/models/glassllm-en"))
        .arg("-o")
        .arg(&out)
        .args(["--outtype", "f16"]));
    let ours = GgufFile::open(&out).unwrap();
    let theirs = GgufFile::open(shared().join("data/models/glassllm-en-f16.gguf")).unwrap();
    assert_eq!(ours.tensor_infos().len(), theirs.tensor_infos().len());
    for info in theirs.tensor_infos() {
        let a = theirs.tensor(&info.name).unwrap();
        let b = ours
            .tensor(&info.name)
            .unwrap_or_else(|e| panic!("{}: {e}", info.name));
        assert_eq!(a.info.dims, b.info.dims, "{}", info.name);
        assert_eq!(a.info.ttype, b.info.ttype, "{}", info.name);
        assert!(
            a.bytes == b.bytes,
            "{}: tensor bytes differ from llama.cpp's converter",
            info.name
        );
    }
    // The hyper-parameters llama.cpp reads must agree exactly.
    for (key, value) in theirs.metadata().iter() {
        if key.starts_with("llama.") || key.starts_with("tokenizer.ggml.") {
            match ours.get(key) {
                Some(v) => assert_eq!(v, value, "metadata {key}"),
                None => panic!("metadata {key} missing from our file"),
            }
        }
    }
}

/// The text `llama-simple` prints: prompt and continuation, on stdout.
fn llama_simple(model: &Path, prompt: &str, n: usize) -> String {
    run(Command::new(llamacpp("llama-simple"))
        .arg("-m")
        .arg(model)
        .arg("-n")
        .arg(n.to_string())
        .arg(prompt))
}

/// `shuku convert HF -o OUT --outtype TYPE`.
fn convert(hf: &Path, out: &Path, outtype: &str) {
    run(shuku()
        .arg("convert")
        .arg(hf)
        .arg("-o")
        .arg(out)
        .args(["--outtype", outtype]));
}

/// The SmolLM2 f32 folder and its F32 GGUF, converted once per test run for all the tests that
/// need it, into cargo's scratch folder for integration tests (replaced on the next run).
fn smollm2_f32() -> (PathBuf, &'static Path) {
    static GGUF: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let hf = asset("hf/SmolLM2-135M-Instruct-f32");
    let gguf = GGUF.get_or_init(|| {
        let gguf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("smollm2-f32.gguf");
        run(shuku().arg("convert").arg(&hf).arg("-o").arg(&gguf).args([
            "--outtype",
            "f32",
            "--overwrite",
        ]));
        gguf
    });
    (hf, gguf.as_path())
}

#[test]
#[ignore = "conformance: needs SmolLM2 from fetch-models.sh and llama.cpp; run by scripts/test.sh"]
fn smollm2_f32_gguf_greedy_tokens_match_llama_cpp() {
    let (hf, gguf) = smollm2_f32();

    let prompt = "The capital of France is";
    let n = 32;
    let theirs = llama_simple(gguf, prompt, n);
    let ours = run(shuku()
        .arg("generate")
        .arg("--model")
        .arg(&hf)
        .args(["-p", prompt, "-n"])
        .arg(n.to_string()));
    println!("llama-simple: {theirs:?}\nshuku-model:  {ours:?}");
    assert_eq!(
        ours.trim_end(),
        theirs.trim_end(),
        "greedy continuations differ"
    );
}

fn final_ppl(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains("Final estimate: PPL ="))
        .unwrap_or_else(|| panic!("no 'Final estimate' line in:\n{text}"));
    let after = line.split("PPL =").nth(1).unwrap().trim();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
#[ignore = "conformance: needs SmolLM2 from fetch-models.sh and llama.cpp; run by scripts/test.sh"]
fn smollm2_perplexity_matches_llama_perplexity() {
    let (hf, gguf) = smollm2_f32();
    let kjv = shared().join("data/text/kjv.txt");
    let (ctx, chunks) = ("256", "12");

    let theirs = Command::new(llamacpp("llama-perplexity"))
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(&kjv)
        .args(["-c", ctx, "-b", ctx, "--chunks", chunks, "-t", "2"])
        .output()
        .unwrap();
    assert!(
        theirs.status.success(),
        "llama-perplexity failed: {}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let theirs = format!(
        "{}{}",
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&theirs.stderr)
    );
    let ours = run(shuku()
        .args(["perplexity", "--model"])
        .arg(&hf)
        .arg("--file")
        .arg(&kjv)
        .args(["-c", ctx, "--chunks", chunks]));
    let (a, b) = (final_ppl(&theirs), final_ppl(&ours));
    println!("llama-perplexity PPL = {a}\nshuku perplexity PPL = {b}");
    let rel = (a - b).abs() / a;
    assert!(
        rel < 5e-4,
        "perplexities differ beyond 3 significant digits: {a} vs {b}"
    );
}

/// glassllm reshaped into another member of the family, saved as an HF folder in `dir` with glassllm's
/// GGUF vocabulary (`tokenizer.gguf`): its `tokenizer.json` is a SentencePiece-style BPE that llama.cpp's
/// converter reads as such only for the llama architecture.
fn glassllm_variant(
    dir: &Path,
    edit: impl FnOnce(
        &mut shuku_model::LlamaConfig,
        &mut std::collections::HashMap<String, candle_core::Tensor>,
    ),
) -> PathBuf {
    use candle_core::Device;
    let src = shared().join("data/models/glassllm-en");
    let model = shuku_model::Llama::from_hf_dir(&src, &Device::Cpu).unwrap();
    let mut config = model.config().clone();
    let mut tensors: std::collections::HashMap<_, _> = model.named_tensors().into_iter().collect();
    edit(&mut config, &mut tensors);
    let variant = shuku_model::Llama::from_named_tensors(config, tensors).unwrap();
    let out = dir.join("variant");
    let vocab = dir.join("vocab");
    std::fs::create_dir_all(&vocab).unwrap();
    let gguf =
        shuku_gguf::GgufFile::open(shared().join("data/models/glassllm-en-f16.gguf")).unwrap();
    shuku_model::write_vocab_gguf(&gguf, &vocab.join(shuku_model::VOCAB_GGUF), false).unwrap();
    variant.save_hf_dir(&out, Some(&vocab), false).unwrap();
    out
}

/// Converts an HF folder to F32 GGUF and checks llama-simple's greedy text against `shuku generate`.
fn assert_llama_cpp_agrees(hf: &Path, prompt: &str, n: usize) {
    let gguf = hf.with_extension("gguf");
    convert(hf, &gguf, "f32");
    let theirs = llama_simple(&gguf, prompt, n);
    let ours = run(shuku()
        .arg("generate")
        .arg("--model")
        .arg(hf)
        .args(["-p", prompt, "-n"])
        .arg(n.to_string()));
    println!("llama-simple: {theirs:?}\nshuku-model:  {ours:?}");
    assert_eq!(
        ours.trim_end(),
        theirs.trim_end(),
        "greedy continuations differ"
    );
}

#[test]
#[ignore = "conformance: needs ../shared and llama.cpp; run by scripts/test.sh"]
fn qwen2_with_qkv_bias_converts_and_runs_in_llama_cpp() {
    use candle_core::{Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let hf = glassllm_variant(tmp.path(), |config, tensors| {
        config.model_type = shuku_model::ModelType::Qwen2;
        config.attention_bias = true;
        for (i, layer) in config.layers.iter().enumerate() {
            for (proj, heads) in [
                ("q_proj", layer.n_heads),
                ("k_proj", layer.n_kv_heads),
                ("v_proj", layer.n_kv_heads),
            ] {
                let n = heads * config.head_dim;
                let bias: Vec<f32> = (0..n).map(|j| 0.05 * ((i * 31 + j) as f32).sin()).collect();
                tensors.insert(
                    format!("model.layers.{i}.self_attn.{proj}.bias"),
                    Tensor::new(bias, &Device::Cpu).unwrap(),
                );
            }
        }
    });
    assert_llama_cpp_agrees(&hf, "Alice was", 32);
}

#[test]
#[ignore = "conformance: needs ../shared and llama.cpp; run by scripts/test.sh"]
fn per_layer_widths_of_a_pruned_model_run_in_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = glassllm_variant(tmp.path(), |config, tensors| {
        // Layer 0 keeps 256 of its 341 FFN channels; layer 2 keeps 2 of its 4 query heads.
        let hd = config.head_dim;
        let ffn = |t: &str| format!("model.layers.0.mlp.{t}_proj.weight");
        for t in ["gate", "up"] {
            let w = tensors[&ffn(t)]
                .narrow(0, 0, 256)
                .unwrap()
                .contiguous()
                .unwrap();
            tensors.insert(ffn(t), w);
        }
        let down = tensors[&ffn("down")]
            .narrow(1, 0, 256)
            .unwrap()
            .contiguous()
            .unwrap();
        tensors.insert(ffn("down"), down);
        config.layers[0].intermediate_size = 256;
        let q = "model.layers.2.self_attn.q_proj.weight".to_string();
        let o = "model.layers.2.self_attn.o_proj.weight".to_string();
        let wq = tensors[&q]
            .narrow(0, 0, 2 * hd)
            .unwrap()
            .contiguous()
            .unwrap();
        let wo = tensors[&o]
            .narrow(1, 0, 2 * hd)
            .unwrap()
            .contiguous()
            .unwrap();
        tensors.insert(q, wq);
        tensors.insert(o, wo);
        config.layers[2].n_heads = 2;
    });
    assert_llama_cpp_agrees(&hf, "Alice was", 32);
    // The GGUF engine runs the same file (architecture `deci`) to the same tokens.
    let gguf = hf.with_extension("gguf");
    let theirs = llama_simple(&gguf, "Alice was", 32);
    let ours = engine_greedy_text(&gguf, "Alice was", 32);
    assert_eq!(
        ours.trim_end(),
        theirs.trim_end(),
        "engine and llama-simple differ on the pruned model"
    );
}

#[test]
#[ignore = "conformance: needs ../shared and llama.cpp; run by scripts/test.sh"]
fn a_structurally_pruned_model_with_uneven_widths_runs_in_llama_cpp() {
    let base = shuku_testkit::workspace_dir().join("assets/shuku-base");
    let tmp = tempfile::tempdir().unwrap();
    let pruned = tmp.path().join("pruned");
    // Global scope takes different shares from different layers: uneven heads and FFN widths.
    run(shuku()
        .arg("prune")
        .arg("--model")
        .arg(&base)
        .arg("-o")
        .arg(&pruned)
        .args([
            "--structured",
            "ffn=0.3,heads=0.25,layers=1",
            "--scope",
            "global",
        ])
        .arg("--calib")
        .arg(shared().join("data/text/shakespeare.txt"))
        .args(["--nsamples", "16", "--seqlen", "128"]));
    let config = shuku_model::LlamaConfig::from_file(pruned.join("config.json")).unwrap();
    assert_eq!(config.num_hidden_layers(), 3);
    let widths: Vec<_> = config
        .layers
        .iter()
        .map(|d| (d.n_heads, d.intermediate_size))
        .collect();
    assert!(
        widths.iter().any(|w| *w != widths[0]),
        "the plan should leave uneven widths: {widths:?}"
    );
    // shuku-model on the HF folder, llama.cpp on its GGUF (arch `deci`), and the GGUF engine agree.
    assert_llama_cpp_agrees(&pruned, "ROMEO:", 32);
    let gguf = pruned.with_extension("gguf");
    let theirs = llama_simple(&gguf, "ROMEO:", 32);
    let ours = engine_greedy_text(&gguf, "ROMEO:", 32);
    assert_eq!(
        ours.trim_end(),
        theirs.trim_end(),
        "engine and llama-simple differ"
    );
}

#[test]
#[ignore = "conformance: needs llama.cpp; run by scripts/test.sh"]
fn the_embedded_base_model_runs_in_llama_cpp_with_the_same_greedy_tokens() {
    let base = shuku_testkit::workspace_dir().join("assets/shuku-base");
    assert!(
        base.join("config.json").is_file(),
        "assets/shuku-base is missing from the checkout"
    );
    let tmp = tempfile::tempdir().unwrap();
    // Convert a copy so the GGUF lands in the temporary folder, not in assets/.
    let hf = tmp.path().join("shuku-base");
    std::fs::create_dir(&hf).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(base.join(f), hf.join(f)).unwrap();
    }
    assert_llama_cpp_agrees(&hf, "ROMEO:", 32);
}

/// The engine on `gguf` as these checks run it: 2 threads, a 512-token context.
fn test_engine(gguf: &Path) -> shuku_infer::Engine {
    let options = shuku_infer::EngineOptions {
        threads: 2,
        context: 512,
        ..Default::default()
    };
    shuku_infer::Engine::load(gguf, options).unwrap()
}

/// The engine's prompt ids and greedy continuation (stopping at end of generation, as llama-simple).
fn engine_greedy_ids(gguf: &Path, prompt: &str, n: usize) -> (Vec<u32>, Vec<u32>) {
    let engine = test_engine(gguf);
    let ids = engine.tokenizer().encode(prompt, true, true).unwrap();
    let generated = engine.generate_greedy(&ids, n).unwrap();
    (ids, generated)
}

/// The engine's greedy text for `prompt`, printed the way llama-simple prints (prompt and generated
/// pieces with special tokens rendered, stopping at end of generation).
fn engine_greedy_text(gguf: &Path, prompt: &str, n: usize) -> String {
    let (ids, generated) = engine_greedy_ids(gguf, prompt, n);
    let file = shuku_gguf::GgufFile::open(gguf).unwrap();
    let tok = shuku_infer::Tokenizer::from_gguf(&file).unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .chain(&generated)
        .flat_map(|&i| tok.token_to_piece(i, true).to_vec())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
#[ignore = "conformance: needs llama.cpp; run by scripts/test.sh"]
fn the_engine_matches_llama_cpp_on_the_base_model_as_f32_and_q8_0() {
    let base = shuku_testkit::workspace_dir().join("assets/shuku-base");
    let tmp = tempfile::tempdir().unwrap();
    let f32_gguf = tmp.path().join("base-f32.gguf");
    convert(&base, &f32_gguf, "f32");
    let q8_gguf = tmp.path().join("base-q8_0.gguf");
    run(Command::new(llamacpp("llama-quantize"))
        .arg(&f32_gguf)
        .arg(&q8_gguf)
        .arg("Q8_0"));
    for gguf in [&f32_gguf, &q8_gguf] {
        let theirs = llama_simple(gguf, "ROMEO:", 64);
        let ours = engine_greedy_text(gguf, "ROMEO:", 64);
        println!(
            "{}:\n  llama-simple: {theirs:?}\n  shuku-infer:  {ours:?}",
            gguf.display()
        );
        assert_eq!(
            ours.trim_end(),
            theirs.trim_end(),
            "{}: greedy texts differ",
            gguf.display()
        );
    }
}
