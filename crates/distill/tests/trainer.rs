//! End-to-end training: exact resume, logging, typed errors.

mod common;

use std::path::Path;

use common::{corpus, TinyLm};
use shuku_distill::{
    ByteTokenizer, DataConfig, DistillError, DistillLoss, DivergenceKind, LogFormat, LrSchedule,
    TemperatureSchedule, TextTokenizer, TokenDataset, TrainConfig, Trainable, Trainer,
};

const VOCAB: usize = 16;
const SEQ: usize = 8;

fn dataset() -> TokenDataset {
    let mut cfg = DataConfig::new(SEQ, VOCAB);
    cfg.validation_fraction = 0.1;
    TokenDataset::from_tokens(&corpus(VOCAB as u32, 2000), &cfg).unwrap()
}

fn config(steps: usize, dir: &Path) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 4,
        seq_len: SEQ,
        grad_accum: 2,
        lr: LrSchedule::WarmupCosine {
            max_lr: 3e-2,
            min_lr: 1e-3,
            warmup_steps: 5,
            total_steps: 40,
        },
        weight_decay: 0.01,
        clip_norm: Some(1.0),
        seed: 11,
        eval_every: 10,
        eval_batches: Some(4),
        log_path: Some(dir.join("curve.jsonl")),
        log_format: LogFormat::Jsonl,
        progress: false,
        ..TrainConfig::default()
    }
}

fn kd_loss() -> DistillLoss {
    DistillLoss {
        kind: DivergenceKind::Jsd { beta: 0.5 },
        alpha: 0.5,
        temperature: TemperatureSchedule::AdaptiveEntropy {
            base: 2.0,
            min: 1.0,
            max: 4.0,
        },
        ignore_index: None,
    }
}

#[test]
fn resume_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = TinyLm::new(VOCAB, 12, 77);
    let n = 40;

    // Straight run.
    let straight_dir = dir.path().join("a");
    std::fs::create_dir_all(&straight_dir).unwrap();
    let model_a = TinyLm::new(VOCAB, 6, 1);
    let mut data = dataset();
    let mut tr = Trainer::new(&model_a, config(n, &straight_dir)).unwrap();
    let report = tr
        .fit(&model_a, Some(&teacher), &mut data, &kd_loss())
        .unwrap();
    assert_eq!(report.step, n);
    assert!(report.last_eval.is_some());
    let first = report.records.first().unwrap().loss;
    let last = report.records.last().unwrap().loss;
    assert!(last < first, "loss should drop: {first} -> {last}");

    // Half, checkpoint, fresh process state, load, other half.
    let split_dir = dir.path().join("b");
    std::fs::create_dir_all(&split_dir).unwrap();
    let ckpt = split_dir.join("ckpt.safetensors");
    let model_b = TinyLm::new(VOCAB, 6, 1);
    let mut data_b = dataset();
    let mut cfg_half = config(n, &split_dir);
    cfg_half.steps = n / 2;
    cfg_half.checkpoint_path = Some(ckpt.clone());
    Trainer::new(&model_b, cfg_half)
        .unwrap()
        .fit(&model_b, Some(&teacher), &mut data_b, &kd_loss())
        .unwrap();
    drop(model_b);

    let model_c = TinyLm::new(VOCAB, 6, 12345); // different init: the checkpoint must overwrite it
    let mut data_c = dataset();
    let mut tr_c = Trainer::new(&model_c, config(n, &split_dir)).unwrap();
    tr_c.resume(&ckpt, &mut data_c).unwrap();
    assert_eq!(tr_c.step(), n / 2);
    let report_c = tr_c
        .fit(&model_c, Some(&teacher), &mut data_c, &kd_loss())
        .unwrap();
    assert_eq!(report_c.step, n);

    assert_eq!(
        model_a.snapshot(),
        model_c.snapshot(),
        "weights differ after resume"
    );
    assert_eq!(data.batch_state(), data_c.batch_state());
    for (a, c) in tr
        .optimizer()
        .params()
        .iter()
        .zip(tr_c.optimizer().params())
    {
        let bits = |t: &candle_core::Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        assert_eq!(bits(&a.m), bits(&c.m), "{}", a.name);
        assert_eq!(bits(&a.v), bits(&c.v), "{}", a.name);
    }
    // The resumed curve continues the same log with identical losses.
    let log_a = std::fs::read_to_string(straight_dir.join("curve.jsonl")).unwrap();
    let log_c = std::fs::read_to_string(split_dir.join("curve.jsonl")).unwrap();
    assert_eq!(log_a.lines().count(), n);
    assert_eq!(log_c.lines().count(), n);
    let losses = |s: &str| -> Vec<f64> {
        s.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(&log_a), losses(&log_c));
}

#[test]
fn plain_training_with_csv_log() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyLm::new(VOCAB, 8, 2);
    let mut data = dataset();
    let mut cfg = config(15, dir.path());
    cfg.log_path = Some(dir.path().join("curve.csv"));
    cfg.log_format = LogFormat::Csv;
    cfg.grad_accum = 1;
    cfg.clip_norm = None;
    let before = Trainer::new(&model, cfg.clone())
        .unwrap()
        .evaluate(&model, &mut data)
        .unwrap()
        .unwrap();
    let report = Trainer::new(&model, cfg)
        .unwrap()
        .fit(&model, None, &mut data, &DistillLoss::default())
        .unwrap();
    let after = report.last_eval.unwrap();
    assert!(
        after.loss < before.loss,
        "{} -> {}",
        before.loss,
        after.loss
    );
    assert!((after.perplexity - after.loss.exp()).abs() < 1e-9);
    let csv = std::fs::read_to_string(dir.path().join("curve.csv")).unwrap();
    assert!(csv.starts_with("step,loss,"));
    assert_eq!(csv.lines().count(), 16);
    assert!(report.records.iter().all(|r| r.soft.is_none()));
}

/// Activation checkpointing asked of a model without a checkpointed pass is a typed error before any
/// update, not a run that silently keeps every activation.
#[test]
fn checkpointing_a_model_without_a_checkpointed_pass_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let student = TinyLm::new(VOCAB, 6, 1);
    let before = student.parameters()[0]
        .1
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut cfg = config(3, dir.path());
    cfg.checkpoint_activations = true;
    let mut data = dataset();
    let err = Trainer::new(&student, cfg)
        .unwrap()
        .fit(&student, None, &mut data, &DistillLoss::default())
        .unwrap_err();
    assert!(
        matches!(&err, DistillError::InvalidConfig(m) if m.contains("checkpoint_activations")),
        "{err}"
    );
    let after = student.parameters()[0]
        .1
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn teacher_with_other_vocab_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let student = TinyLm::new(VOCAB, 6, 1);
    let teacher = TinyLm::new(VOCAB + 4, 6, 2);
    let mut data = dataset();
    let mut tr = Trainer::new(&student, config(3, dir.path())).unwrap();
    let err = tr
        .fit(
            &student,
            Some(&teacher as &dyn Trainable),
            &mut data,
            &kd_loss(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            DistillError::VocabMismatch {
                left: 16,
                right: 20,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let model = TinyLm::new(VOCAB, 6, 1);
    let data = dataset();
    let tr = Trainer::new(&model, config(1, dir.path())).unwrap();
    tr.save_checkpoint(&ckpt, &data).unwrap();
    let bytes = std::fs::read(&ckpt).unwrap();

    // Truncated.
    let trunc = dir.path().join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let mut data2 = dataset();
    let mut tr2 = Trainer::new(&model, config(1, dir.path())).unwrap();
    let before = model.snapshot();
    assert!(matches!(
        tr2.resume(&trunc, &mut data2),
        Err(DistillError::CorruptCheckpoint { .. })
    ));
    // Garbage.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    assert!(matches!(
        tr2.resume(&junk, &mut data2),
        Err(DistillError::CorruptCheckpoint { .. })
    ));
    // Wrong shapes: a wider model; nothing is modified on failure.
    let wide = TinyLm::new(VOCAB, 7, 1);
    let wide_before = wide.snapshot();
    let mut tr3 = Trainer::new(&wide, config(1, dir.path())).unwrap();
    let err = tr3.resume(&ckpt, &mut data2).unwrap_err();
    assert!(
        matches!(err, DistillError::CheckpointMismatch { .. }),
        "{err}"
    );
    assert_eq!(wide.snapshot(), wide_before);
    assert_eq!(model.snapshot(), before);
    // Missing file.
    assert!(matches!(
        tr2.resume(&dir.path().join("nope"), &mut data2),
        Err(DistillError::Io { .. })
    ));
}

struct LyingTokenizer;
impl TextTokenizer for LyingTokenizer {
    fn encode(&self, text: &str) -> shuku_distill::Result<Vec<u32>> {
        Ok(text.bytes().map(|b| b as u32 + 100).collect())
    }
    fn vocab_size(&self) -> usize {
        50
    }
}

#[test]
fn bad_corpora_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "abc").unwrap();
    let cfg = DataConfig::new(8, 256);

    assert!(matches!(
        TokenDataset::from_files(&[&empty], &ByteTokenizer, &cfg),
        Err(DistillError::EmptyCorpus)
    ));
    assert!(matches!(
        TokenDataset::from_files(&[&short], &ByteTokenizer, &cfg),
        Err(DistillError::CorpusTooShort {
            tokens: 3,
            needed: 9
        })
    ));
    // Tokenizer larger than the model.
    assert!(matches!(
        TokenDataset::from_files(&[&short], &ByteTokenizer, &DataConfig::new(2, 100)),
        Err(DistillError::VocabMismatch {
            left: 256,
            right: 100,
            ..
        })
    ));
    // Ids beyond the model vocabulary.
    assert!(matches!(
        TokenDataset::from_files(&[&short], &LyingTokenizer, &DataConfig::new(2, 120)),
        Err(DistillError::TokenOutOfVocab {
            token: 197,
            vocab: 120
        })
    ));
    assert!(matches!(
        TokenDataset::from_tokens(&[1, 2, 300], &DataConfig::new(1, 256)),
        Err(DistillError::TokenOutOfVocab { token: 300, .. })
    ));
    // Missing file.
    assert!(matches!(
        TokenDataset::from_files(&[dir.path().join("nope.txt")], &ByteTokenizer, &cfg),
        Err(DistillError::Io { .. })
    ));
}

#[test]
fn streaming_files_in_small_chunks_matches_whole_text() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "first file\nwith a few lines\nand ünïcödé ✓ text\n",
        "second file without trailing newline — a long line that exceeds the chunk size by far",
    ];
    let paths: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = dir.path().join(format!("{i}.txt"));
            std::fs::write(&p, t).unwrap();
            p
        })
        .collect();
    let mut cfg = DataConfig::new(4, 256);
    cfg.chunk_bytes = 7;
    cfg.separator = Some(0);
    cfg.validation_fraction = 0.0;
    let mut streamed = TokenDataset::from_files(&paths, &ByteTokenizer, &cfg).unwrap();
    let mut all: Vec<u32> = Vec::new();
    for t in texts {
        all.extend(t.bytes().map(u32::from));
        all.push(0);
    }
    let mut direct = TokenDataset::from_tokens(&all, &cfg).unwrap();
    assert_eq!(streamed.total_tokens(), all.len());
    assert_eq!(streamed.train_len(), direct.train_len());
    let dev = candle_core::Device::Cpu;
    for _ in 0..10 {
        let a = streamed.next_batch(3, &dev).unwrap();
        let b = direct.next_batch(3, &dev).unwrap();
        assert_eq!(
            a.inputs.to_vec2::<u32>().unwrap(),
            b.inputs.to_vec2::<u32>().unwrap()
        );
        assert_eq!(
            a.targets.to_vec2::<u32>().unwrap(),
            b.targets.to_vec2::<u32>().unwrap()
        );
    }
}
