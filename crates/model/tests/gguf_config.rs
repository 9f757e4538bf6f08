//! The GGUF written by llama.cpp's converter for glassllm describes the same config as its HF folder.

mod common;

use shuku_gguf::{ArchParams, GgufFile, PerLayer};
use shuku_model::{LayerDims, LlamaConfig};

#[test]
fn glassllm_gguf_config_matches_hf_config() {
    let hf = LlamaConfig::from_file(common::glassllm_dir().join("config.json")).unwrap();
    let file =
        GgufFile::open(common::shared_dir().join("data/models/glassllm-en-f16.gguf")).unwrap();
    let from_gguf = LlamaConfig::from_gguf(&file).unwrap();
    assert_eq!(from_gguf.layers, hf.layers);
    assert_eq!(
        (
            from_gguf.vocab_size,
            from_gguf.hidden_size,
            from_gguf.head_dim
        ),
        (hf.vocab_size, hf.hidden_size, hf.head_dim)
    );
    assert_eq!(from_gguf.tie_word_embeddings, hf.tie_word_embeddings);
    assert_eq!(from_gguf.attention_bias, hf.attention_bias);
    assert_eq!(from_gguf.rms_norm_eps, hf.rms_norm_eps);
    assert_eq!(from_gguf.rope_theta, hf.rope_theta);
    assert_eq!(from_gguf.bos_token_id, hf.bos_token_id);

    let params = hf.to_arch_params().unwrap();
    let theirs = ArchParams::from_gguf(&file).unwrap();
    assert_eq!(params.feed_forward_length, theirs.feed_forward_length);
    assert_eq!(params.head_count_kv, theirs.head_count_kv);
    assert_eq!(params.block_count, theirs.block_count);
    assert_eq!(params.embedding_length, theirs.embedding_length);
}

#[test]
fn per_layer_widths_become_gguf_arrays() {
    let mut c = LlamaConfig::from_file(common::glassllm_dir().join("config.json")).unwrap();
    c.layers[2] = LayerDims {
        n_heads: 2,
        n_kv_heads: 1,
        intermediate_size: 200,
        sliding: false,
    };
    let p = c.to_arch_params().unwrap();
    assert_eq!(
        p.feed_forward_length,
        PerLayer::Layers(vec![341, 341, 200, 341])
    );
    assert_eq!(p.head_count, PerLayer::Layers(vec![4, 4, 2, 4]));
    // glassllm's config.json states head_dim, so llama.cpp's converter writes key_length; without it
    // (hidden / heads of layer 0 is the head width) nothing is written and llama.cpp derives it.
    assert_eq!(p.key_length, Some(32));
    c.explicit_head_dim = false;
    assert_eq!(c.to_arch_params().unwrap().key_length, None);
}
