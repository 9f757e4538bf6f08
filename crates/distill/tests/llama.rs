//! Distilling a small shuku-model `Llama` from a larger one, through the generic trainer.

use candle_core::Device;
use shuku_distill::{
    DataConfig, DistillLoss, DivergenceKind, LrSchedule, TemperatureSchedule, TokenDataset,
    TrainConfig, Trainer,
};
use shuku_model::{Llama, LlamaConfig};

fn config(hidden: usize, layers: usize, heads: usize, inter: usize) -> LlamaConfig {
    let json = format!(
        r#"{{"model_type": "llama", "vocab_size": 61, "hidden_size": {hidden}, "num_hidden_layers": {layers},
            "num_attention_heads": {heads}, "num_key_value_heads": 2, "intermediate_size": {inter},
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
            "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2}}"#
    );
    LlamaConfig::from_json_str(&json, "tiny/config.json").unwrap()
}

fn dataset() -> TokenDataset {
    let tokens: Vec<u32> = (0..3000u32).map(|i| (i * 7 + i / 13) % 61).collect();
    let mut cfg = DataConfig::new(16, 61);
    cfg.validation_fraction = 0.1;
    TokenDataset::from_tokens(&tokens, &cfg).unwrap()
}

fn train_config(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 2,
        seq_len: 16,
        grad_accum: 2,
        lr: LrSchedule::WarmupCosine {
            max_lr: 1e-2,
            min_lr: 1e-3,
            warmup_steps: 2,
            total_steps: 8,
        },
        clip_norm: Some(1.0),
        eval_every: 0,
        eval_batches: Some(2),
        progress: false,
        ..TrainConfig::default()
    }
}

fn loss() -> DistillLoss {
    DistillLoss {
        kind: DivergenceKind::Forward,
        alpha: 0.7,
        temperature: TemperatureSchedule::Constant(2.0),
        ignore_index: None,
    }
}

fn bits(m: &Llama) -> Vec<Vec<u32>> {
    m.parameters()
        .iter()
        .map(|(_, v)| {
            let t = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            t.iter().map(|x| x.to_bits()).collect()
        })
        .collect()
}

#[test]
fn llama_student_distills_and_resumes_exactly() {
    let dev = Device::Cpu;
    let teacher = Llama::random(config(32, 2, 4, 40), 5, &dev).unwrap();
    let student_cfg = config(16, 1, 2, 24);
    let n = 8;

    let a = Llama::random(student_cfg.clone(), 9, &dev).unwrap();
    let mut data = dataset();
    let mut tr = Trainer::new(&a, train_config(n)).unwrap();
    let before = tr.evaluate(&a, &mut data).unwrap().unwrap();
    let report = tr.fit(&a, Some(&teacher), &mut data, &loss()).unwrap();
    let after = report.last_eval.unwrap();
    assert!(
        after.loss < before.loss,
        "{} -> {}",
        before.loss,
        after.loss
    );
    assert!(report.records.iter().all(|r| r.soft.is_some()));
    // Every parameter (norm gains included) received gradient and moved.
    let init = Llama::random(student_cfg.clone(), 9, &dev).unwrap();
    for ((name, _), (x, y)) in a.parameters().iter().zip(bits(&a).iter().zip(&bits(&init))) {
        assert_ne!(x, y, "{name} did not train");
    }

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("student.safetensors");
    let b = Llama::random(student_cfg.clone(), 9, &dev).unwrap();
    let mut data_b = dataset();
    let mut half = train_config(n);
    half.steps = n / 2;
    half.checkpoint_path = Some(ckpt.clone());
    Trainer::new(&b, half)
        .unwrap()
        .fit(&b, Some(&teacher), &mut data_b, &loss())
        .unwrap();

    let c = Llama::random(student_cfg, 1234, &dev).unwrap();
    let mut data_c = dataset();
    let mut tr_c = Trainer::new(&c, train_config(n)).unwrap();
    tr_c.resume(&ckpt, &mut data_c).unwrap();
    tr_c.fit(&c, Some(&teacher), &mut data_c, &loss()).unwrap();
    assert_eq!(bits(&a), bits(&c));
}

/// Every family distils: a student made by dropping every other layer of a random teacher (Gemma 3's
/// sliding-window pattern follows the kept layers, Phi-3's fused layout is internal), trained with KD,
/// lowers its held-out loss and trains every parameter.
#[test]
fn every_family_distills_a_layer_dropped_student() {
    let dev = Device::Cpu;
    let base = r#""vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 40, "max_position_embeddings": 64"#;
    let families = [
        r#""model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8}"#,
        r#""model_type": "mistral", "head_dim": 16, "sliding_window": 6"#,
        r#""model_type": "qwen2""#,
        r#""model_type": "qwen3", "head_dim": 8"#,
        r#""model_type": "phi3", "original_max_position_embeddings": 64"#,
        r#""model_type": "gemma3_text", "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 6,
            "sliding_window_pattern": 2"#,
    ];
    for extra in families {
        let cfg =
            LlamaConfig::from_json_str(&format!("{{{base}, {extra}}}"), "config.json").unwrap();
        let teacher = Llama::random(cfg, 5, &dev).unwrap();
        let student =
            shuku_distill::drop_layers(&teacher, &shuku_distill::LayerSelection::EveryOther)
                .unwrap();
        assert_eq!(student.config().num_hidden_layers(), 2);
        let before_bits = bits(&student);
        let mut data = dataset();
        let mut tr = Trainer::new(&student, train_config(8)).unwrap();
        let before = tr.evaluate(&student, &mut data).unwrap().unwrap();
        let report = tr
            .fit(&student, Some(&teacher), &mut data, &loss())
            .unwrap();
        let after = report.last_eval.unwrap();
        let family = student.config().model_type.as_str();
        assert!(
            after.loss < before.loss,
            "{family}: {} -> {}",
            before.loss,
            after.loss
        );
        for ((name, _), (x, y)) in student
            .parameters()
            .iter()
            .zip(bits(&student).iter().zip(&before_bits))
        {
            assert_ne!(x, y, "{family}: {name} did not train");
        }
    }
}

/// The fused CPU kernels (default) and the composed candle ops (`composed_only`) train the same run:
/// over 100 steps with grouped-query attention and AdamW, by distillation (cross-entropy and forward
/// KL, the head fused with both) and by hard labels alone (the head fused with the cross-entropy), the
/// loss curves agree to float tolerance at every step.
#[test]
fn fused_and_composed_kernels_give_the_same_loss_curve() {
    let run = |composed: bool, distil: bool| -> Vec<f64> {
        let dev = Device::Cpu;
        let teacher = Llama::random(config(32, 2, 4, 48), 3, &dev).unwrap();
        let student = Llama::random(config(32, 1, 4, 40), 4, &dev).unwrap();
        let mut data = dataset();
        let mut cfg = train_config(100);
        cfg.lr = LrSchedule::WarmupCosine {
            max_lr: 1e-2,
            min_lr: 1e-3,
            warmup_steps: 5,
            total_steps: 100,
        };
        let mut trainer = Trainer::new(&student, cfg).unwrap();
        let teacher = distil.then_some(&teacher as &dyn shuku_distill::Trainable);
        let mut fit = || trainer.fit(&student, teacher, &mut data, &loss());
        let report = if composed {
            shuku_model::ops::composed_only(fit)
        } else {
            fit()
        }
        .unwrap();
        report.records.iter().map(|r| r.loss).collect()
    };
    for distil in [true, false] {
        let (fused, composed) = (run(false, distil), run(true, distil));
        assert_eq!(fused.len(), 100);
        assert!(
            fused[99] < fused[0],
            "the run learns: {} -> {}",
            fused[0],
            fused[99]
        );
        for (step, (a, b)) in fused.iter().zip(&composed).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "distil {distil}, step {step}: fused loss {a}, composed {b}"
            );
        }
    }
}

/// Activation checkpointing recomputes each layer in the backward pass instead of keeping its
/// activations: the same run to the bit, by distillation (forward KL, the head fused) and by hard
/// labels alone, and a model that has no checkpointed pass is refused rather than trained without it.
#[test]
fn checkpointed_activations_train_the_same_run_to_the_bit() {
    let dev = Device::Cpu;
    let teacher = Llama::random(config(32, 2, 4, 48), 3, &dev).unwrap();
    let run = |checkpointed: bool, distil: bool| {
        let student = Llama::random(config(32, 2, 4, 40), 4, &dev).unwrap();
        let mut data = dataset();
        let mut cfg = train_config(12);
        cfg.checkpoint_activations = checkpointed;
        let teacher = distil.then_some(&teacher as &dyn shuku_distill::Trainable);
        let report = Trainer::new(&student, cfg)
            .unwrap()
            .fit(&student, teacher, &mut data, &loss())
            .unwrap();
        let curve: Vec<(f64, f64)> = report
            .records
            .iter()
            .map(|r| (r.loss, r.grad_norm))
            .collect();
        (curve, bits(&student), report.last_eval.unwrap().loss)
    };
    for distil in [true, false] {
        let (plain, checkpointed) = (run(false, distil), run(true, distil));
        assert_eq!(plain.0.len(), 12);
        assert_eq!(plain, checkpointed, "distil {distil}");
    }
}
