//! llama.cpp's tokenizer conformance suite (`tests/test-tokenizer-0.cpp`) over the vocab-only GGUF
//! files in `shared/data/vocab`: every string of `X.gguf.inp` (separated by
//! `\n__ggml_vocab_test__\n`) must tokenise, with `add_special = false` and `parse_special = false`,
//! to the ids on the matching line of `X.gguf.out`.
//!
//! The shared folder is `$SHUKU_SHARED`, else `../shared` next to the workspace; a missing asset fails.

use std::path::PathBuf;

use shuku_gguf::GgufFile;
use shuku_infer::{Tokenizer, TokenizerError};

/// Vocabularies whose tokenizer shuku does not implement, with the reason. They must fail with
/// `Unsupported`.
const UNSUPPORTED: &[(&str, &str)] = &[(
    "bert-bge",
    "WordPiece (`bert`) tokenizer, used by embedding models only",
)];

fn vocab_dir() -> PathBuf {
    shuku_testkit::shared("data/vocab")
}

/// llama.cpp's `read_tests`: inputs split on the separator (a trailing separator ends the list),
/// outputs one stripped line each.
fn read_cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = vocab_dir();
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp")))
        .unwrap_or_else(|e| panic!("{name}.inp: {e}"));
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out")))
        .unwrap_or_else(|e| panic!("{name}.out: {e}"));
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(SEP) {
            Some(n) => {
                inputs.push(inp[pos..pos + n].to_string());
                pos += n + SEP.len();
            }
            None => {
                inputs.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: input and output counts differ"
    );
    inputs.into_iter().zip(outputs).collect()
}

fn vocab_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(vocab_dir())
        .expect("read vocab dir")
        .filter_map(|e| {
            let f = e.ok()?.file_name().into_string().ok()?;
            let name = f.strip_prefix("ggml-vocab-")?.strip_suffix(".gguf")?;
            Some(name.to_string())
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no ggml-vocab-*.gguf files");
    names
}

fn load(name: &str) -> Result<Tokenizer, TokenizerError> {
    let path = vocab_dir().join(format!("ggml-vocab-{name}.gguf"));
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file)
}

#[test]
fn all_vocabs_match_llama_cpp() {
    let mut report = Vec::new();
    let mut failed = false;
    for name in vocab_names() {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
            match load(&name) {
                Err(TokenizerError::Unsupported { model }) => {
                    report.push(format!("{name:16} unsupported ({model}: {why})"));
                }
                other => {
                    failed = true;
                    report.push(format!(
                        "{name:16} expected Unsupported, got {:?}",
                        other.map(|_| ())
                    ));
                }
            }
            continue;
        }
        let tok = match load(&name) {
            Ok(t) => t,
            Err(e) => {
                failed = true;
                report.push(format!("{name:16} FAILED to load: {e}"));
                continue;
            }
        };
        let cases = read_cases(&name);
        let mut bad = Vec::new();
        for (text, expected) in &cases {
            let got = tok.encode(text, false, false).expect("encode");
            if &got != expected {
                bad.push(format!(
                    "    {text:?}\n      expected {expected:?}\n      got      {got:?}"
                ));
            }
        }
        if bad.is_empty() {
            report.push(format!("{name:16} ok ({} strings)", cases.len()));
        } else {
            failed = true;
            report.push(format!(
                "{name:16} FAILED {}/{} strings",
                bad.len(),
                cases.len()
            ));
            report.extend(bad.into_iter().take(5));
        }
    }
    let report = report.join("\n");
    println!("{report}");
    assert!(!failed, "vocab conformance failures:\n{report}");
}
