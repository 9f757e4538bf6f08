//! `shuku inspect FILE.gguf`: header, metadata and the tensor table of a GGUF file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use shuku_gguf::{GgufFile, TensorType, Value};

use crate::output::Output;
use crate::table::{human_bytes, Align, Table};

/// Print a GGUF file's header, metadata and tensors (names, types, shapes, bytes, bits per weight).
///
/// The file is memory-mapped and only its header is parsed, so this is instant even for large models.
/// Tensors of types shuku cannot decode (IQ*, TQ*, MXFP4, …) are listed with their raw type id.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file to inspect.
    file: PathBuf,
    /// Show whole arrays and strings instead of the first few elements / characters.
    #[arg(long)]
    full: bool,
    /// Skip the tensor table.
    #[arg(long)]
    no_tensors: bool,
}

pub fn run(args: Args) -> Result<()> {
    let file = GgufFile::open(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let infos = file.tensor_infos();
    let total_bytes: u64 = infos.iter().filter_map(|t| t.n_bytes()).sum();
    let total_params: u64 = infos.iter().map(|t| t.n_elements()).sum();
    let mut out = Output::stdout();
    out.line(format!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, {} parameters, {} tensor data ({:.2} bits per weight), alignment {}",
        args.file.display(),
        file.version(),
        file.metadata().len(),
        infos.len(),
        total_params,
        human_bytes(total_bytes),
        if total_params == 0 { 0.0 } else { total_bytes as f64 * 8.0 / total_params as f64 },
        file.alignment(),
    ));

    out.line("");
    let mut meta = Table::new(&[
        ("key", Align::Left),
        ("type", Align::Left),
        ("value", Align::Left),
    ]);
    for (key, value) in file.metadata().iter() {
        meta.row(vec![
            key.to_string(),
            value.type_description(),
            show_value(value, args.full),
        ]);
    }
    out.text(&meta.render());

    if args.no_tensors {
        return Ok(());
    }
    out.line("");
    let mut tensors = Table::new(&[
        ("#", Align::Right),
        ("name", Align::Left),
        ("type", Align::Left),
        ("shape (ne)", Align::Left),
        ("bytes", Align::Right),
        ("bpw", Align::Right),
    ]);
    for (i, t) in infos.iter().enumerate() {
        let ty = match t.ttype {
            TensorType::Known(k) => k.name().to_string(),
            TensorType::Unknown(id) => format!("unknown({id})"),
        };
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        tensors.row(vec![
            i.to_string(),
            t.name.clone(),
            ty,
            format!("[{}]", dims.join(", ")),
            t.n_bytes().map(human_bytes).unwrap_or_else(|| "?".into()),
            t.bits_per_weight()
                .map(|b| format!("{b:.2}"))
                .unwrap_or_else(|| "?".into()),
        ]);
    }
    out.text(&tensors.render());
    Ok(())
}

/// A value as one table cell: strings quoted and escaped, long arrays abbreviated.
fn show_value(value: &Value, full: bool) -> String {
    const MAX_CHARS: usize = 60;
    const MAX_ITEMS: usize = 5;
    match value {
        Value::String(s) => {
            let escaped: String = s.escape_debug().collect();
            if !full && escaped.chars().count() > MAX_CHARS {
                let head: String = escaped.chars().take(MAX_CHARS).collect();
                format!("\"{head}…\" ({} chars)", s.chars().count())
            } else {
                format!("\"{escaped}\"")
            }
        }
        Value::Array(a) => {
            let n = a.len();
            let shown = if full { n } else { n.min(MAX_ITEMS) };
            let items: Vec<String> = (0..shown)
                .filter_map(|i| a.get(i))
                .map(|v| show_value(&v, full))
                .collect();
            let more = if shown < n { ", …" } else { "" };
            format!("[{}{more}] ({n} items)", items.join(", "))
        }
        Value::F32(v) => format!("{v}"),
        Value::F64(v) => format!("{v}"),
        other => match other.as_i64() {
            Some(i) => i.to_string(),
            None => match other.as_u64() {
                Some(u) => u.to_string(),
                None => other.as_bool().map(|b| b.to_string()).unwrap_or_default(),
            },
        },
    }
}
