//! The onnxruntime-genai folder: `model.onnx` (the graph of [`decoder`]) with its weights in
//! `model.onnx.data`, `genai_config.json` (what onnxruntime-genai needs to drive the graph: input and
//! output names, head counts, context length, token ids, search defaults) and the tokenizer files.

pub mod decoder;
mod genai_config;
mod graph;
pub mod proto;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use prost::Message;
use shuku_model::{Llama, StagedDir};

use crate::error::{ExportError, Result};
use crate::host::{check_group_size, host_tensors};
use crate::options::{ExportOptions, Format};
use crate::progress::Progress;
use crate::report::ExportReport;
use crate::Exporter;
use decoder::DecoderBuilder;
use graph::GraphWriter;
use proto::{ModelProto, OperatorSetIdProto};

/// The graph file's name.
pub const MODEL_FILE: &str = "model.onnx";
/// The external weight file's name.
pub const DATA_FILE: &str = "model.onnx.data";
/// ONNX IR version written (ONNX Runtime 1.17 and later read it).
const IR_VERSION: i64 = 10;
/// Default-domain operator set: 21 has every standard operator used here.
const OPSET: i64 = 21;

/// Writes onnxruntime-genai folders.
#[derive(Debug, Clone, Default)]
pub struct OnnxExporter {
    options: ExportOptions,
}

impl OnnxExporter {
    /// An exporter with these options.
    pub fn new(options: ExportOptions) -> Self {
        Self { options }
    }
}

impl Exporter for OnnxExporter {
    fn format(&self) -> Format {
        Format::Onnx
    }

    fn export(&self, model: &Llama, tokenizer: &Path, out: &Path) -> Result<ExportReport> {
        let start = Instant::now();
        let opts = &self.options;
        let config = model.config();
        decoder::check_supported(config)?;
        let quantized = opts.bits.quantized().is_some();
        let group = opts.group_size_for(Format::Onnx)?;
        let tensors = host_tensors(model)?;
        let model_parameters: u64 = tensors.iter().map(|t| t.len() as u64).sum();
        if quantized {
            check_group_size(&tensors, group)?;
        }
        let mut by_name: HashMap<String, _> =
            tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        let staged = StagedDir::create(out, opts.overwrite)?;
        let steps = 2 * config.layers.len() as u64 + 2;
        let progress = Progress::new(opts.progress, steps, "onnx");
        let builder = DecoderBuilder {
            g: GraphWriter::new("main_graph", &staged.path().join(DATA_FILE))?,
            config,
            bits: opts.bits,
            group,
            symmetric: opts.symmetric,
        };
        let graph = builder.build(
            |name| {
                by_name.remove(name).ok_or_else(|| ExportError::Encode {
                    file: MODEL_FILE.into(),
                    message: format!("the model has no tensor {name}"),
                })
            },
            &progress,
        )?;
        progress.finish();
        let model_proto = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![
                OperatorSetIdProto {
                    domain: String::new(),
                    version: OPSET,
                },
                OperatorSetIdProto {
                    domain: "com.microsoft".into(),
                    version: 1,
                },
            ],
            producer_name: "shuku".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            metadata_props: Vec::new(),
        };
        let model_path = staged.path().join(MODEL_FILE);
        std::fs::write(&model_path, model_proto.encode_to_vec())
            .map_err(|e| ExportError::io(&model_path, e))?;
        genai_config::write(config, &staged.path().join(genai_config::FILE))?;
        shuku_model::copy_tokenizer(tokenizer, staged.path())?;

        let mut report = ExportReport::new(
            Format::Onnx,
            out,
            opts.bits.bits(),
            quantized.then_some(group),
        );
        report.files = ExportReport::list_files(staged.path())?;
        report.weight_bytes = report
            .files
            .iter()
            .filter(|(n, _)| n == MODEL_FILE || n == DATA_FILE)
            .map(|(_, b)| b)
            .sum();
        report.parameters = model_parameters;
        report.model_parameters = model_parameters;
        if quantized {
            report
                .notes
                .push("every linear layer is MatMulNBits; the embedding is read from 4/8-bit codes by GatherBlockQuantized (shared with a tied LM head)".into());
        }
        staged.commit()?;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }
}
