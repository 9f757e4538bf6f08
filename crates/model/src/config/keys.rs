//! Which `config.json` keys shuku reads, and which it may safely skip.
//!
//! A key that changes the computation and is silently skipped makes a different model (a Llama 3 config
//! read without its RoPE scaling still loads and still generates text). So every key must be either read
//! by the parser or listed here as not affecting a causal LM's forward pass (bookkeeping, generation
//! defaults, training-only dropout, the tokenizer's ids). Keys that start with `_` are annotations by
//! the convention of HF's own private fields (`_name_or_path`, `_commit_hash`) and of tools that record a
//! model's provenance; the one such key that carries math (`_sliding_window_pattern`) is read. Anything
//! else is refused with its name.

/// Keys that do not change the forward pass of a decoder-only LM in inference or in training without
/// dropout.
const INERT: &[&str] = &[
    // bookkeeping
    "_name_or_path",
    "architectures",
    "auto_map",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "initializer_range",
    "transformers.js_config",
    "is_llama_config",
    "_attn_implementation_autoset",
    "attn_implementation",
    "tokenizer_class",
    "id2label",
    "label2id",
    "problem_type",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "chunk_size_feed_forward",
    "is_decoder",
    "is_encoder_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "finetuning_task",
    "prefix",
    "task_specific_params",
    "cache_implementation",
    "unsloth_fixed",
    "unsloth_version",
    // token ids the tokenizer files also carry
    "pad_token_id",
    "unk_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    // generation defaults
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    // training-time regularisation (shuku trains without dropout)
    "attention_dropout",
    "embd_pdrop",
    "resid_pdrop",
    "hidden_dropout",
    // Llama's tensor-parallel slicing of the matmuls: the same products, summed in another order
    "pretraining_tp",
    // Qwen: layers from which a sliding window would apply; only with `use_sliding_window`, which is read
    "max_window_layers",
];

/// Keys the parser reads (some only to check they hold the one value it implements).
const READ: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "head_dim",
    "hidden_act",
    "hidden_activation",
    "rms_norm_eps",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_local_base_freq",
    "rope_interleaved",
    "partial_rotary_factor",
    "sliding_window",
    "use_sliding_window",
    "sliding_window_pattern",
    "_sliding_window_pattern",
    "layer_types",
    "query_pre_attn_scalar",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "use_bidirectional_attention",
    "shuku_layers",
];

/// Whether the parser may accept `key` (read, or known to be inert).
pub(crate) fn is_known(key: &str) -> bool {
    READ.contains(&key) || INERT.contains(&key) || key.starts_with('_')
}
