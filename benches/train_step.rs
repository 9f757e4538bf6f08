//! One training step of shuku-model's `Llama` on the base model (`assets/shuku-base`: 4 layers,
//! hidden 256, vocabulary 4096), batch 8 × 128 tokens of Shakespeare, in tokens per second:
//! forward, cross-entropy, backward, global-norm clipping and AdamW through shuku-distill's
//! `Trainer` with the `Distillation` recipe's settings — `train` without a teacher (fine-tuning,
//! recovery after pruning), `distill` with a teacher of the same shape (one more forward pass and
//! the KL term). Every distillation or recovery run is steps of exactly this, and the `train` line
//! is the step `benches/torch_reference.py` times in PyTorch (same shapes, weight decay 0.1).
//!
//! Threads: rayon's pool (`RAYON_NUM_THREADS`, default one per core), which the model's fused kernels
//! and their matrix products use.
//!
//! `cargo bench --bench train_step`

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use shuku::candle::Device;
use shuku::distill::{DataConfig, Distillation, TokenDataset, Trainable, Trainer};
use shuku::model::{Llama, Tokenizer};

const BATCH: usize = 8;
const SEQ_LEN: usize = 128;

/// Times `iters` steps of one `Trainer::fit` call (the trainer's setup, which allocates the AdamW
/// moments, is outside the timing; the model keeps training across calls, which does not change
/// the work of a step).
fn run_steps(
    recipe: &Distillation,
    student: &Llama,
    teacher: Option<&Llama>,
    data: &mut TokenDataset,
    iters: u64,
) -> Duration {
    let recipe = Distillation {
        steps: iters as usize,
        ..recipe.clone()
    };
    let mut trainer = Trainer::new(student, recipe.train_config()).expect("a valid config");
    let teacher = teacher.map(|t| t as &dyn Trainable);
    let loss = recipe.loss(teacher.is_some());
    let started = Instant::now();
    trainer
        .fit(student, teacher, data, &loss)
        .expect("training runs");
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let device = Device::Cpu;
    let base = common::base_model();
    let tokens = Tokenizer::from_file(&base)
        .expect("the base model's tokenizer")
        .encode(&common::corpus(300_000), false)
        .expect("tokenizing the corpus");
    let student = Llama::from_hf_dir(&base, &device).expect("loading assets/shuku-base");
    let teacher = Llama::from_hf_dir(&base, &device).expect("loading assets/shuku-base");
    let vocab = student.config().vocab_size;
    // No held-out sequences: `fit` would score them after the last step, inside the timing.
    let mut data = TokenDataset::from_token_split(&tokens, &[], &DataConfig::new(SEQ_LEN, vocab))
        .expect("packing the tokens");
    let mut recipe = Distillation::new(1, SEQ_LEN)
        .batch_size(BATCH)
        .progress(false);
    recipe.weight_decay = 0.1;

    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements((BATCH * SEQ_LEN) as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("train", |b| {
        b.iter_custom(|iters| run_steps(&recipe, &student, None, &mut data, iters))
    });
    group.bench_function("distill", |b| {
        b.iter_custom(|iters| run_steps(&recipe, &student, Some(&teacher), &mut data, iters))
    });
    group.finish();
}

/// The group with the benches' common settings (what `criterion_group!` expands to, documented:
/// the workspace denies missing docs).
fn benches() {
    bench(&mut common::criterion(
        Duration::from_secs(1),
        Duration::from_secs(8),
    ));
}
criterion_main!(benches);
