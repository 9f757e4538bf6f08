//! One model exported to every engine a user might deploy to, measured side by side: shuku's ONNX int4
//! and MLX 4-bit exports next to the runtimes' own converters' output of the same model and bits, and
//! llama.cpp's Q4_K_M for reference — file size, bits per weight, held-out perplexity and KL divergence
//! against the original (each computed from its own runtime's logits, llama-perplexity's protocol), and
//! decode tokens/s in each runtime on this machine.
//!
//! ```sh
//! cargo run --release --example export_compare                          # the embedded base model
//! cargo run --release --example export_compare -- --model ~/.cache/shuku-assets/hf/SmolLM2-135M-Instruct-f32 \
//!     --llama-bench ~/.cache/shuku-llamacpp/bin/llama-bench
//! ```
//!
//! Needs the runtimes' venv (`scripts/export-venv.sh`, made on first use; `$SHUKU_EXPORT_PYTHON`
//! overrides it). MLX rows use f32 scales on both sides: MLX's x86 CPU backend computes f16 about 30 times
//! slower; the default f16 export's size is printed beside it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{model_dir, prepare_out_dir, progress};
use shuku::candle::Device;
use shuku::distill::corpus::split_tail;
use shuku::eval::{LogitsSource, PerplexityProtocol};
use shuku::export::runtime::{generate, runtime_python, GenerateRequest, Runtime, RuntimeLogits};
use shuku::export::{ExportOptions, Exporter, MlxDtype, MlxExporter, OnnxExporter, WeightBits};
use shuku::infer::{Engine, EngineOptions};
use shuku::model::{Llama, Tokenizer};
use shuku::pipeline::{quality, speed, Deployable, Quality, SpeedOptions};
use shuku::prune::parameter_count;
use shuku::quantize::{preset, Quantizer};

const DEFAULT_OUT: &str = "target/export_compare";

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    about = "Export one model to ONNX Runtime and MLX and compare with the runtimes' own converters"
)]
struct Args {
    #[command(flatten)]
    input: common::ModelText,
    /// Context of the evaluation windows.
    #[arg(short = 'c', long, default_value_t = 256)]
    ctx: usize,
    /// Evaluation windows (at most).
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Tokens decoded for the speed columns.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Add llama.cpp's decode speed on the Q4_K_M file, measured by this llama-bench.
    #[arg(long)]
    llama_bench: Option<PathBuf>,
    /// Compute threads of shuku's engine and llama-bench (the Python runtimes use every core).
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Output folder (the exports, the anchors, export_compare.json).
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Replace an existing non-empty output folder (the default folder is always replaced).
    #[arg(long)]
    overwrite: bool,
}

fn main() -> ExitCode {
    common::exit_with(run(Args::parse()))
}

/// One row of the table.
#[derive(Debug, serde::Serialize)]
struct Row {
    engine: &'static str,
    made_by: &'static str,
    path: PathBuf,
    bytes: u64,
    bits_per_weight: f64,
    ppl: f64,
    ppl_stderr: f64,
    mean_kld: Option<f64>,
    decode_tok_s: Option<f64>,
}

/// Bytes of the files a runtime loads (weights and graph; not tokenizer or config).
fn weight_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors")
            || name.starts_with("model.onnx")
            || name.ends_with(".gguf")
        {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn run(args: Args) -> Result<()> {
    common::set_threads(args.threads);
    let py = runtime_python("scripts/export-venv.sh".as_ref())
        .context("the runtimes' venv (run from the repository root)")?;
    let dir = model_dir(&args.input.model)?;
    let out = prepare_out_dir(&args.out, DEFAULT_OUT, args.overwrite)?;
    let original = Llama::from_hf_dir(&dir, &Device::Cpu)?;
    let parameters = parameter_count(&original) as u64;
    let tokenizer = Tokenizer::from_file(&dir)?;
    let text = std::fs::read_to_string(&args.input.text)
        .with_context(|| format!("reading --text {}", args.input.text.display()))?;
    let (_, eval_text) = split_tail(&text, 0.05)?;
    let eval = tokenizer.encode(eval_text, true)?;
    let eval = &eval[..eval.len().min(args.ctx * args.chunks)];
    let protocol = PerplexityProtocol::new(args.ctx);
    let prompt = tokenizer.encode("The king said to his daughter that", false)?;

    // shuku's exports.
    let q4 = |dtype| ExportOptions {
        bits: WeightBits::Q4,
        mlx_dtype: dtype,
        progress: true,
        // The output folder was accepted for reuse (`prepare_out_dir`), so its exports are replaced.
        overwrite: true,
        ..ExportOptions::default()
    };
    let shuku_onnx = out.join("shuku-onnx-int4");
    let shuku_onnx_sym = out.join("shuku-onnx-int4-symmetric");
    let shuku_mlx = out.join("shuku-mlx-q4");
    let shuku_mlx_f16 = out.join("shuku-mlx-q4-f16");
    println!(
        "{}",
        OnnxExporter::new(q4(MlxDtype::F16)).export(&original, &dir, &shuku_onnx)?
    );
    let symmetric = ExportOptions {
        symmetric: true,
        ..q4(MlxDtype::F16)
    };
    println!(
        "{}",
        OnnxExporter::new(symmetric).export(&original, &dir, &shuku_onnx_sym)?
    );
    println!(
        "{}",
        MlxExporter::new(q4(MlxDtype::F32)).export(&original, &dir, &shuku_mlx)?
    );
    println!(
        "{}",
        MlxExporter::new(q4(MlxDtype::F16)).export(&original, &dir, &shuku_mlx_f16)?
    );

    // The runtimes' own converters, and llama.cpp's Q4_K_M (shuku-quantize writes llama-quantize's bytes).
    let anchors = out.join("anchors");
    let log_path = out.join("anchors.log");
    let log = std::fs::File::create(&log_path)?;
    println!(
        "converting with the runtimes' own converters (log: {})",
        log_path.display()
    );
    let status = Command::new("bash")
        .arg("crates/export/py/convert_anchors.sh")
        .arg(&dir)
        .arg(&anchors)
        .env("SHUKU_EXPORT_PYTHON", &py)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    if !status.success() {
        bail!("convert_anchors.sh failed; see {}", log_path.display());
    }
    let gguf = out.join("q4_k_m.gguf");
    Quantizer::new(preset("Q4_K_M")?)
        .overwrite(true)
        .run(&dir, &gguf)?;

    let targets: Vec<(&'static str, &'static str, PathBuf, Option<Runtime>)> = vec![
        (
            "ONNX Runtime int4",
            "shuku export",
            shuku_onnx.clone(),
            Some(Runtime::OnnxRuntime),
        ),
        (
            "ONNX Runtime int4",
            "shuku export --symmetric",
            shuku_onnx_sym.clone(),
            Some(Runtime::OnnxRuntime),
        ),
        (
            "ONNX Runtime int4",
            "onnxruntime-genai builder",
            anchors.join("ort-int4"),
            Some(Runtime::OnnxRuntime),
        ),
        (
            "MLX 4-bit",
            "shuku export",
            shuku_mlx.clone(),
            Some(Runtime::Mlx),
        ),
        (
            "MLX 4-bit",
            "mlx_lm.convert",
            anchors.join("mlx-q4"),
            Some(Runtime::Mlx),
        ),
        ("llama.cpp Q4_K_M", "shuku quantize", gguf.clone(), None),
    ];
    let mut rows = Vec::new();
    for (engine, made_by, path, runtime) in targets {
        let bar = progress(0, &format!("{engine} ({made_by}): perplexity"));
        let mut progress = |done: usize, total: usize, _: f64| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let mut reference = &original;
        let mut source: Box<dyn LogitsSource> = match runtime {
            Some(r) => Box::new(RuntimeLogits::spawn(&py, r, &path)?),
            None => Box::new(Engine::load(
                &path,
                EngineOptions {
                    threads: args.threads,
                    context: args.ctx,
                    ..Default::default()
                },
            )?),
        };
        let Quality {
            ppl,
            ppl_stderr,
            mean_kld,
            ..
        } = quality(
            Some(&mut reference),
            source.as_mut(),
            eval,
            &protocol,
            Some(&mut progress),
        )?;
        drop(source);
        bar.finish_and_clear();
        let decode_tok_s = match runtime {
            Some(r) => {
                let r = if r == Runtime::OnnxRuntime {
                    Runtime::Genai
                } else {
                    r
                };
                let request = GenerateRequest {
                    prompt: prompt.clone(),
                    new_tokens: args.decode_tokens,
                    stop_at_eos: false,
                    warm_up: true,
                };
                generate(&py, r, &path, &request)?.decode_tok_s
            }
            None => Some(
                speed(
                    &Deployable::Gguf(path.clone()),
                    &SpeedOptions {
                        prompt: prompt.clone(),
                        decode_tokens: args.decode_tokens,
                        threads: args.threads,
                    },
                )?
                .tokens_per_s,
            ),
        };
        let bytes = if path.is_dir() {
            weight_bytes(&path)?
        } else {
            std::fs::metadata(&path)?.len()
        };
        rows.push(Row {
            engine,
            made_by,
            bits_per_weight: bytes as f64 * 8.0 / parameters as f64,
            path,
            bytes,
            ppl,
            ppl_stderr,
            mean_kld,
            decode_tok_s,
        });
    }
    let llama_tok_s = match &args.llama_bench {
        Some(bin) => Some(llama_bench(bin, &gguf, args.decode_tokens, args.threads)?),
        None => None,
    };

    let mut f32_ppl = {
        let mut reference = &original;
        shuku::eval::perplexity(&mut reference, eval, &protocol, None)?
    };
    f32_ppl.per_chunk_ppl.clear();
    println!(
        "\n{}: {parameters} parameters, held-out {} ({} windows of {}), original (f32, shuku-model) ppl {:.4} ± {:.4}\n",
        dir.display(),
        args.input.text.display(),
        f32_ppl.chunks,
        args.ctx,
        f32_ppl.ppl,
        f32_ppl.ppl_stderr
    );
    println!("| engine | made by | MiB | bits/weight | ppl | KLD vs f32 | decode tok/s (in its runtime) |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.4} ± {:.4} | {} | {} |",
            r.engine,
            r.made_by,
            r.bytes as f64 / (1 << 20) as f64,
            r.bits_per_weight,
            r.ppl,
            r.ppl_stderr,
            r.mean_kld.map_or("-".into(), |k| format!("{k:.4}")),
            r.decode_tok_s.map_or("-".into(), |t| format!("{t:.1}")),
        );
    }
    if let Some(t) = llama_tok_s {
        println!(
            "| llama.cpp Q4_K_M | llama-bench tg{} | | | | | {t:.1} |",
            args.decode_tokens
        );
    }
    println!(
        "\nshuku's MLX export with the default f16 scales: {:.1} MiB (the MLX rows above use f32 scales on both sides).",
        weight_bytes(&shuku_mlx_f16)? as f64 / (1 << 20) as f64
    );
    let json = serde_json::json!({ "model": dir, "parameters": parameters, "ctx": args.ctx,
        "chunks": f32_ppl.chunks, "original_ppl": f32_ppl.ppl, "rows": rows, "llama_bench_tok_s": llama_tok_s });
    std::fs::write(
        out.join("export_compare.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("written: {}/export_compare.json", out.display());
    Ok(())
}

/// llama-bench's mean decode tokens/s (`-p 0 -n N`, 3 repetitions).
fn llama_bench(bin: &Path, gguf: &Path, n: usize, threads: usize) -> Result<f64> {
    let out = Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args([
            "-p",
            "0",
            "-n",
            &n.to_string(),
            "-t",
            &threads.to_string(),
            "-r",
            "3",
            "-o",
            "json",
        ])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("llama-bench's JSON")?;
    v[0]["avg_ts"]
        .as_f64()
        .context("llama-bench's JSON has no avg_ts")
}
