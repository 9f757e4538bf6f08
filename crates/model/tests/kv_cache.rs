//! Incremental decoding with the KV cache must reproduce the full-sequence logits.

mod common;

use candle_core::{Device, IndexOp, Tensor};
use shuku_model::{KvCache, Llama};

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn incremental_logits_equal_full_sequence_logits() {
    for (tied, bias) in [(false, false), (true, true)] {
        let config = common::tiny_config(tied, bias);
        let model = Llama::random(config.clone(), 11, &Device::Cpu).unwrap();
        let seq: Vec<u32> = vec![5, 9, 33, 2, 60, 17, 8, 41, 12, 3];
        let full = model
            .forward(
                &Tensor::new(seq.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                None,
            )
            .unwrap();
        let mut cache = KvCache::new(&config);
        // Prompt of 4, then one token at a time.
        let prompt = Tensor::new(&seq[..4], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let first = model.forward(&prompt, Some(&mut cache)).unwrap();
        assert!(max_abs(&first, &full.i((.., 0..4, ..)).unwrap()) < 1e-5);
        for (pos, &tok) in seq.iter().enumerate().skip(4) {
            assert_eq!(cache.seq_len(), pos);
            let step = model
                .forward(
                    &Tensor::new(&[[tok]], &Device::Cpu).unwrap(),
                    Some(&mut cache),
                )
                .unwrap();
            let d = max_abs(&step, &full.i((.., pos..pos + 1, ..)).unwrap());
            assert!(d < 1e-5, "position {pos}: max abs diff {d}");
        }
    }
}

#[test]
fn greedy_generation_with_cache_matches_recomputation() {
    let config = common::tiny_config(false, false);
    let model = Llama::random(config, 3, &Device::Cpu).unwrap();
    let prompt = [4u32, 8, 15, 16];
    let generated = model.generate_greedy(&prompt, 5).unwrap();
    let mut seq = prompt.to_vec();
    for _ in 0..5 {
        let logits = model.logits_vec(&seq).unwrap();
        let last = &logits[(seq.len() - 1) * 61..];
        let next = (0..61)
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap() as u32;
        seq.push(next);
    }
    assert_eq!(generated, seq[4..].to_vec());
}

#[test]
fn bad_token_input_is_a_typed_error() {
    let model = Llama::random(common::tiny_config(true, false), 1, &Device::Cpu).unwrap();
    let out_of_vocab = Tensor::new(&[[1u32, 61]], &Device::Cpu).unwrap();
    assert!(matches!(
        model.forward(&out_of_vocab, None),
        Err(shuku_model::ModelError::InvalidInput(_))
    ));
    let wrong_dtype = Tensor::new(&[[1f32, 2.]], &Device::Cpu).unwrap();
    assert!(matches!(
        model.forward(&wrong_dtype, None),
        Err(shuku_model::ModelError::InvalidInput(_))
    ));
    assert!(model.generate_greedy(&[], 3).is_err());
}
