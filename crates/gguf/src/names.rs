//! Hugging Face ↔ GGUF tensor names.
//!
//! llama.cpp looks tensors up by its own names (`blk.N.attn_q.weight`); HF checkpoints use the
//! transformers module paths (`model.layers.N.self_attn.q_proj.weight`). The mapping is a pair of
//! fixed tables (global tensors, per-layer suffixes) used in both directions, so the two directions
//! cannot drift apart. Gemma 3 reuses `post_attention_layernorm` for a different norm than the
//! llama family does, hence the `*_arch` variants.

const GLOBAL: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Per-layer suffixes shared by llama, deci, mistral, qwen2/3 and SmolLM.
const LLAMA_LAYER: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Gemma 3: four norms per layer plus q/k norms.
const GEMMA3_LAYER: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    (
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Phi-3: q/k/v fused in `qkv_proj`, gate/up fused in `gate_up_proj` (stored as `ffn_up`).
const PHI3_LAYER: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.qkv_proj.weight", "attn_qkv.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// HF tensors that have no GGUF counterpart (recomputed by llama.cpp).
const IGNORED_LAYER_SUFFIXES: &[&str] = &["self_attn.rotary_emb.inv_freq"];

fn layer_table(arch: &str) -> &'static [(&'static str, &'static str)] {
    match arch {
        "gemma3" | "gemma3_text" | "gemma2" => GEMMA3_LAYER,
        "phi3" => PHI3_LAYER,
        _ => LLAMA_LAYER,
    }
}

/// Splits `<prefix><N>.<rest>` into `(N, rest)`; `N` must be plain decimal.
fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(u32, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (num, rest) = rest.split_once('.')?;
    if num.is_empty() || num.len() > 9 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if num.len() > 1 && num.starts_with('0') {
        return None;
    }
    Some((num.parse().ok()?, rest))
}

/// GGUF name of an HF tensor of a llama-family model; `None` for tensors to skip
/// (rotary `inv_freq`) or unknown names.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    hf_to_gguf_arch("llama", name)
}

/// HF name of a GGUF tensor of a llama-family model.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    gguf_to_hf_arch("llama", name)
}

/// [`hf_to_gguf`] for a given `general.architecture` (`gemma3` has its own norms).
pub fn hf_to_gguf_arch(arch: &str, name: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == name) {
        return Some((*g).to_string());
    }
    let (n, rest) = split_layer(name, "model.layers.")?;
    if IGNORED_LAYER_SUFFIXES.contains(&rest) {
        return None;
    }
    let (_, g) = layer_table(arch).iter().find(|(h, _)| *h == rest)?;
    Some(format!("blk.{n}.{g}"))
}

/// [`gguf_to_hf`] for a given `general.architecture`.
pub fn gguf_to_hf_arch(arch: &str, name: &str) -> Option<String> {
    if let Some((h, _)) = GLOBAL.iter().find(|(_, g)| *g == name) {
        return Some((*h).to_string());
    }
    let (n, rest) = split_layer(name, "blk.")?;
    let (h, _) = layer_table(arch).iter().find(|(_, g)| *g == rest)?;
    Some(format!("model.layers.{n}.{h}"))
}

/// Whether an HF tensor is deliberately dropped on export (as opposed to unknown).
pub fn is_ignored_hf(name: &str) -> bool {
    split_layer(name, "model.layers.").is_some_and(|(_, r)| IGNORED_LAYER_SUFFIXES.contains(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_maps_both_ways() {
        for arch in ["llama", "gemma3"] {
            for (h, g) in GLOBAL {
                assert_eq!(hf_to_gguf_arch(arch, h).as_deref(), Some(*g));
                assert_eq!(gguf_to_hf_arch(arch, g).as_deref(), Some(*h));
            }
            for layer in [0u32, 7, 31, 123] {
                for (h, g) in layer_table(arch) {
                    let hf = format!("model.layers.{layer}.{h}");
                    let gg = format!("blk.{layer}.{g}");
                    assert_eq!(hf_to_gguf_arch(arch, &hf), Some(gg.clone()), "{arch} {hf}");
                    assert_eq!(gguf_to_hf_arch(arch, &gg), Some(hf.clone()), "{arch} {gg}");
                }
            }
        }
    }

    #[test]
    fn llama_examples() {
        let pairs = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.3.self_attn.q_proj.weight",
                "blk.3.attn_q.weight",
            ),
            ("model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"),
            ("model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"),
            (
                "model.layers.11.self_attn.o_proj.weight",
                "blk.11.attn_output.weight",
            ),
            (
                "model.layers.2.post_attention_layernorm.weight",
                "blk.2.ffn_norm.weight",
            ),
            (
                "model.layers.2.mlp.gate_proj.weight",
                "blk.2.ffn_gate.weight",
            ),
            ("model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
            (
                "model.layers.29.mlp.down_proj.weight",
                "blk.29.ffn_down.weight",
            ),
        ];
        for (h, g) in pairs {
            assert_eq!(hf_to_gguf(h).as_deref(), Some(g));
            assert_eq!(gguf_to_hf(g).as_deref(), Some(h));
        }
        assert_eq!(
            hf_to_gguf_arch("gemma3", "model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blk.1.post_attention_norm.weight")
        );
        assert_eq!(
            hf_to_gguf_arch("gemma3", "model.layers.1.pre_feedforward_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
    }

    #[test]
    fn skipped_and_unknown_names() {
        assert_eq!(
            hf_to_gguf("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
        assert!(is_ignored_hf(
            "model.layers.0.self_attn.rotary_emb.inv_freq"
        ));
        assert!(!is_ignored_hf("model.layers.0.mlp.up_proj.weight"));
        for bad in [
            "model.layers.x.mlp.up_proj.weight",
            "model.layers..mlp.up_proj.weight",
            "model.layers.01.mlp.up_proj.weight",
            "model.layers.-1.mlp.up_proj.weight",
            "model.layers.0.mlp.unknown.weight",
            "model.layers.99999999999.mlp.up_proj.weight",
            "something",
            "",
        ] {
            assert_eq!(hf_to_gguf(bad), None, "{bad}");
        }
        for bad in [
            "blk.x.attn_q.weight",
            "blk.0.nope.weight",
            "blk.0",
            "output",
        ] {
            assert_eq!(gguf_to_hf(bad), None, "{bad}");
        }
    }
}
