//! shuku-model against the plain-numpy reference `shared/tools/np_llama.py` on the real glassllm model:
//! logits and llama.cpp-protocol perplexity.

mod common;

use candle_core::Device;
use shuku_eval::PerplexityProtocol;
use shuku_model::{Llama, Tokenizer};

const LOGITS_SCRIPT: &str = r#"
import json, sys
import numpy as np
from np_llama import Llama
m = Llama(sys.argv[1])
ids = [int(t) for t in sys.argv[2].split(",")]
print(json.dumps([float(x) for x in np.asarray(m.logits(ids), dtype=np.float64).ravel()]))
"#;

#[test]
fn glassllm_logits_match_numpy_reference() {
    let dir = common::glassllm_dir();
    let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::from_file(&dir).unwrap();
    let mut ids = tokenizer
        .encode(
            "Alice was beginning to get very tired of sitting by her sister on the bank.",
            true,
        )
        .unwrap();
    ids.insert(0, model.config().bos_token_id.unwrap());
    let csv = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = common::run_python(LOGITS_SCRIPT, &[dir.to_str().unwrap(), &csv]);
    let reference: Vec<f64> = serde_json::from_str(out.trim()).unwrap();
    let ours = model.logits_vec(&ids).unwrap();
    assert_eq!(ours.len(), reference.len());
    let max_diff = ours
        .iter()
        .zip(&reference)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "glassllm: {} tokens, max |logit - numpy| = {max_diff:.3e}",
        ids.len()
    );
    assert!(max_diff < 1e-4, "max abs logit difference {max_diff}");
}

#[test]
fn glassllm_perplexity_matches_numpy_llama_cpp_protocol() {
    let dir = common::glassllm_dir();
    let text: String =
        std::fs::read_to_string(common::shared_dir().join("data/text/shakespeare.txt"))
            .unwrap()
            .chars()
            .take(4000)
            .collect();
    let tmp = tempfile::tempdir().unwrap();
    let text_path = tmp.path().join("slice.txt");
    std::fs::write(&text_path, &text).unwrap();

    let (ctx, chunks) = (64, 3);
    let out = common::run_python(
        "import sys, runpy; sys.argv = ['np_llama.py'] + sys.argv[1:]; runpy.run_module('np_llama', run_name='__main__')",
        &[dir.to_str().unwrap(), "--lcpp", text_path.to_str().unwrap(), &ctx.to_string(), &chunks.to_string()],
    );
    let last = out.lines().last().unwrap();
    let reference: f64 = last
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ppl="))
        .unwrap_or_else(|| panic!("no ppl= in {last:?}"))
        .parse()
        .unwrap();

    let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    let tokens = Tokenizer::from_file(&dir)
        .unwrap()
        .encode(&text, true)
        .unwrap();
    let protocol = PerplexityProtocol {
        n_ctx: ctx,
        n_chunks: Some(chunks),
        bos: None,
    };
    let report = model.perplexity(&tokens, &protocol).unwrap();
    eprintln!("ours: {report}; numpy: {reference}");
    assert_eq!(report.chunks, chunks);
    assert_eq!(report.tokens_scored, chunks * (ctx - 1 - ctx / 2));
    let rel = (report.ppl - reference).abs() / reference;
    assert!(
        rel < 1e-4,
        "ppl {} vs numpy {reference} (rel {rel:.2e})",
        report.ppl
    );
}
