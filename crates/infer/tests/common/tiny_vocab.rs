//! A tiny SPM vocabulary for models written by the tests: `<unk>`, `<s>`, `</s>`, then `▁w3`,
//! `▁w4`, … (no byte tokens), with scores that prefer lower ids.

use shuku_gguf::{Metadata, Value};

/// Inserts the `tokenizer.*` keys of an `n`-token vocabulary (BOS 1, EOS 2).
pub fn insert_spm_vocab(meta: &mut Metadata, n: usize) {
    let tokens: Vec<String> = (0..n)
        .map(|i| match i {
            0 => "<unk>".to_string(),
            1 => "<s>".to_string(),
            2 => "</s>".to_string(),
            i => format!("\u{2581}w{i}"),
        })
        .collect();
    meta.insert("tokenizer.ggml.model", "llama");
    meta.insert("tokenizer.ggml.tokens", Value::from(tokens));
    meta.insert(
        "tokenizer.ggml.scores",
        Value::from((0..n).map(|i| -(i as f32)).collect::<Vec<f32>>()),
    );
    meta.insert(
        "tokenizer.ggml.token_type",
        Value::from(
            (0..n)
                .map(|i| if i < 3 { 3i32 } else { 1 })
                .collect::<Vec<i32>>(),
        ),
    );
    meta.insert("tokenizer.ggml.bos_token_id", 1u32);
    meta.insert("tokenizer.ggml.eos_token_id", 2u32);
}
