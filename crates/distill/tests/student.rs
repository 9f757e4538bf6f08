//! Students built from a teacher copy its weights and never alias them.

use candle_core::{Device, Tensor};
use shuku_distill::{drop_layers, from_teacher, LayerSelection};
use shuku_model::{Llama, LlamaConfig};

fn config(layers: usize, tie: bool) -> LlamaConfig {
    let json = format!(
        r#"{{"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": {layers},
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
            "tie_word_embeddings": {tie}}}"#
    );
    LlamaConfig::from_json_str(&json, "tiny/config.json").unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn tensor<'a>(m: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &m.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn dropped_layers_are_copies_of_the_kept_teacher_layers() {
    let teacher = Llama::random(config(4, true), 3, &Device::Cpu).unwrap();
    let student = drop_layers(&teacher, &LayerSelection::EveryOther).unwrap();
    assert_eq!(student.config().num_hidden_layers(), 2);
    let (t, s) = (teacher.named_tensors(), student.named_tensors());
    for (sl, tl) in [(0, 0), (1, 3)] {
        let name = |l: usize| format!("model.layers.{l}.mlp.down_proj.weight");
        assert_eq!(values(tensor(&s, &name(sl))), values(tensor(&t, &name(tl))));
    }
    assert_eq!(
        values(tensor(&s, "model.embed_tokens.weight")),
        values(tensor(&t, "model.embed_tokens.weight"))
    );

    // Moving the student must not move the teacher.
    let before = values(tensor(&t, "model.layers.3.mlp.down_proj.weight"));
    let (_, var) = student
        .parameters()
        .into_iter()
        .find(|(n, _)| n == "model.layers.1.mlp.down_proj.weight")
        .unwrap();
    var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
    let after = values(tensor(
        &teacher.named_tensors(),
        "model.layers.3.mlp.down_proj.weight",
    ));
    assert_eq!(before, after);
}

#[test]
fn fresh_config_copies_what_fits_and_reports_the_rest() {
    let teacher = Llama::random(config(2, true), 3, &Device::Cpu).unwrap();
    // Untied, three layers: layer 2 has no teacher counterpart, lm_head starts from the embedding.
    let (student, report) = from_teacher(&teacher, config(3, false), &[1, 0], 7).unwrap();
    assert!(report.copied.contains(&"lm_head.weight".to_string()));
    assert!(report
        .copied
        .contains(&"model.layers.0.self_attn.q_proj.weight".to_string()));
    assert!(report
        .fresh
        .iter()
        .all(|n| n.starts_with("model.layers.2.")));
    assert_eq!(report.fresh.len(), 9);
    let (t, s) = (teacher.named_tensors(), student.named_tensors());
    assert_eq!(
        values(tensor(&s, "model.layers.0.self_attn.q_proj.weight")),
        values(tensor(&t, "model.layers.1.self_attn.q_proj.weight"))
    );

    let mut other = config(2, true);
    other.vocab_size = 65;
    assert!(from_teacher(&teacher, other, &[0, 1], 0).is_err());
}
