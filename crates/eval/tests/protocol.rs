//! Closed-form checks of the perplexity and KL-divergence protocol.

use shuku_eval::{
    kl_divergence, perplexity, EvalError, KlStats, LogitsSource, PerplexityProtocol, SourceError,
};

/// Uniform logits over `vocab` tokens; records every window it was asked for.
struct Uniform {
    vocab: usize,
    seen: Vec<Vec<u32>>,
}

impl LogitsSource for Uniform {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
        self.seen.push(tokens.to_vec());
        Ok(vec![1.5; tokens.len() * self.vocab])
    }
}

/// Puts logit `boost` on the token equal to the input token at the same position + 1 (a "copy next" oracle
/// that knows the text): lets a test see exactly which targets were scored.
struct Oracle {
    text: Vec<u32>,
    vocab: usize,
    calls: usize,
    n_ctx: usize,
}

impl LogitsSource for Oracle {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
        let base = self.calls * self.n_ctx;
        self.calls += 1;
        let mut out = vec![0.0; tokens.len() * self.vocab];
        for j in 0..tokens.len() {
            if let Some(&next) = self.text.get(base + j + 1) {
                out[j * self.vocab + next as usize] = 100.0;
            }
        }
        Ok(out)
    }
}

fn text(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7 + 3) % vocab).collect()
}

#[test]
fn uniform_logits_give_ppl_equal_to_vocab() {
    let tokens = text(100, 50);
    let mut src = Uniform {
        vocab: 50,
        seen: vec![],
    };
    let r = perplexity(&mut src, &tokens, &PerplexityProtocol::new(16), None).unwrap();
    assert!((r.ppl - 50.0).abs() < 1e-9, "{}", r.ppl);
    assert_eq!(r.ppl_stderr, 0.0);
    assert!(r.per_chunk_ppl.iter().all(|p| (p - 50.0).abs() < 1e-9));
}

#[test]
fn chunk_count_and_tokens_scored_follow_llama_cpp() {
    let tokens = text(100, 50);
    let mut src = Uniform {
        vocab: 50,
        seen: vec![],
    };
    // 100 / 16 = 6 windows; 16 - 1 - 8 = 7 positions each.
    let r = perplexity(&mut src, &tokens, &PerplexityProtocol::new(16), None).unwrap();
    assert_eq!((r.chunks, r.tokens_scored, r.n_ctx), (6, 42, 16));
    assert_eq!(src.seen.len(), 6);
    assert_eq!(src.seen[2], tokens[32..48].to_vec());
    // Odd context: first = 7/2 = 3, scored 3..6 = 3 positions; capped at 2 chunks.
    let protocol = PerplexityProtocol {
        n_ctx: 7,
        n_chunks: Some(2),
        bos: None,
    };
    let r = perplexity(&mut src, &tokens, &protocol, None).unwrap();
    assert_eq!((r.chunks, r.tokens_scored), (2, 6));
    // Requesting more chunks than exist uses what exists.
    let protocol = PerplexityProtocol {
        n_ctx: 16,
        n_chunks: Some(100),
        bos: None,
    };
    assert_eq!(
        perplexity(&mut src, &tokens, &protocol, None)
            .unwrap()
            .chunks,
        6
    );
}

#[test]
fn too_short_text_and_bad_protocols_are_errors() {
    let mut src = Uniform {
        vocab: 50,
        seen: vec![],
    };
    let err = perplexity(&mut src, &text(31, 50), &PerplexityProtocol::new(16), None).unwrap_err();
    assert!(matches!(
        err,
        EvalError::TooFewTokens {
            needed: 32,
            found: 31,
            ..
        }
    ));
    let err = perplexity(&mut src, &text(31, 50), &PerplexityProtocol::new(2), None).unwrap_err();
    assert!(matches!(err, EvalError::InvalidProtocol(_)));
    let p = PerplexityProtocol {
        n_ctx: 8,
        n_chunks: Some(0),
        bos: None,
    };
    assert!(matches!(
        perplexity(&mut src, &text(64, 50), &p, None),
        Err(EvalError::InvalidProtocol(_))
    ));
}

#[test]
fn bos_replaces_first_input_token_but_not_targets() {
    let tokens = text(64, 50);
    let protocol = PerplexityProtocol {
        n_ctx: 16,
        n_chunks: None,
        bos: Some(49),
    };
    let mut src = Uniform {
        vocab: 50,
        seen: vec![],
    };
    perplexity(&mut src, &tokens, &protocol, None).unwrap();
    for (i, window) in src.seen.iter().enumerate() {
        assert_eq!(window[0], 49);
        assert_eq!(&window[1..], &tokens[i * 16 + 1..(i + 1) * 16]);
    }
    // The oracle is right about the original next tokens; with BOS replacement the scored targets must still be
    // the original ones, so the perplexity stays ~1.
    let mut oracle = Oracle {
        text: tokens.clone(),
        vocab: 50,
        calls: 0,
        n_ctx: 16,
    };
    let r = perplexity(&mut oracle, &tokens, &protocol, None).unwrap();
    assert!((r.ppl - 1.0).abs() < 1e-9, "{}", r.ppl);
}

#[test]
fn stderr_matches_hand_computation() {
    // Two-token vocabulary; chunk logits alternate so nll takes two values.
    struct Alternating;
    impl LogitsSource for Alternating {
        fn vocab_size(&self) -> usize {
            2
        }
        fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
            Ok((0..tokens.len())
                .flat_map(|j| if j % 2 == 0 { [0.0, 0.0] } else { [2.0, 0.0] })
                .collect())
        }
    }
    let tokens = vec![0u32; 40];
    let r = perplexity(
        &mut Alternating,
        &tokens,
        &PerplexityProtocol::new(10),
        None,
    )
    .unwrap();
    // Scored j = 5..8 in each of 4 windows: j odd (5,7) -> nll = ln(1+e^-2); even (6,8) -> ln 2.
    let a = (1.0f64 + (-2.0f64).exp()).ln();
    let b = 2.0f64.ln();
    let nll: Vec<f64> = (0..4).flat_map(|_| [a, b, a, b]).collect();
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|x| x * x).sum::<f64>() / n - mean * mean;
    assert_eq!(r.tokens_scored, 16);
    assert!((r.ppl - mean.exp()).abs() < 1e-12);
    assert!((r.ppl_stderr - (var / (n - 1.0)).sqrt() * mean.exp()).abs() < 1e-12);
    assert!(r
        .to_string()
        .starts_with("ctx 10, 4 chunks, second half of each chunk scored: PPL = "));
}

#[test]
fn progress_callback_sees_every_chunk() {
    let tokens = text(64, 50);
    let mut src = Uniform {
        vocab: 50,
        seen: vec![],
    };
    let mut calls = vec![];
    let mut cb = |done: usize, total: usize, ppl: f64| calls.push((done, total, ppl));
    perplexity(
        &mut src,
        &tokens,
        &PerplexityProtocol::new(16),
        Some(&mut cb),
    )
    .unwrap();
    assert_eq!(calls.len(), 4);
    assert_eq!((calls[3].0, calls[3].1), (4, 4));
}

#[test]
fn kld_of_identical_rows_is_zero() {
    let mut s = KlStats::new();
    for i in 0..20 {
        let row: Vec<f32> = (0..8).map(|j| ((i * j) as f32 * 0.37).sin()).collect();
        let p = s.add(&row, &row, (i % 8) as u32).unwrap();
        assert!(p.kld.abs() < 1e-12 && p.p_diff == 0.0 && p.same_top);
    }
    let r = s.report().unwrap();
    assert!(r.mean_kld.abs() < 1e-12 && r.max_kld.abs() < 1e-12);
    assert_eq!(r.same_top, 1.0);
    assert_eq!(r.rms_p_diff, 0.0);
    assert!((r.ppl_test - r.ppl_ref).abs() < 1e-12);
}

#[test]
fn kld_of_known_distributions_matches_hand_value() {
    // P = (1/2, 1/2), Q = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3).
    let p = [0.0f32, 0.0];
    let q = [0.0f32, 3.0f32.ln()];
    let want = 0.5 * 2.0f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
    let mut s = KlStats::new();
    let pos = s.add(&p, &q, 0).unwrap();
    assert!((pos.kld - want).abs() < 1e-7, "{} vs {want}", pos.kld);
    // Δp on the target token 0: 1/4 - 1/2.
    assert!((pos.p_diff + 0.25).abs() < 1e-7);
    // Reference argmax is token 0 (tie → first), test argmax is token 1.
    assert!(!pos.same_top);
    let r = s.report().unwrap();
    assert!((r.rms_p_diff - 0.25).abs() < 1e-7);
    assert!((r.median_kld - want).abs() < 1e-7);
}

#[test]
fn kl_statistics_percentiles_follow_llama_cpp() {
    let mut s = KlStats::new();
    // KLD values 0, k1, ..., via scaled second distributions.
    let p = [0.0f32, 0.0];
    let mut want = vec![];
    for i in 0..5 {
        let q = [0.0f32, i as f32 * 0.5];
        want.push(s.add(&p, &q, 1).unwrap().kld);
    }
    want.sort_by(f64::total_cmp);
    let r = s.report().unwrap();
    assert_eq!(r.median_kld, want[2]);
    assert_eq!(r.max_kld, want[4]);
    // 99th percentile: p = 0.99 * 4 = 3.96 → 0.04 * v3 + 0.96 * v4.
    assert!((r.kld_p99 - (0.04 * want[3] + 0.96 * want[4])).abs() < 1e-12);
    assert_eq!(
        r.mean_kld_stderr, 0.0,
        "no uncertainty for ≤ 10 values, as llama.cpp"
    );
}

#[test]
fn kl_divergence_runs_the_same_windows_on_both_sources() {
    let tokens = text(64, 50);
    let protocol = PerplexityProtocol {
        n_ctx: 16,
        n_chunks: Some(3),
        bos: Some(1),
    };
    let mut a = Uniform {
        vocab: 50,
        seen: vec![],
    };
    let mut b = Uniform {
        vocab: 50,
        seen: vec![],
    };
    let r = kl_divergence(&mut a, &mut b, &tokens, &protocol, None).unwrap();
    assert_eq!(r.count, 3 * 7);
    assert_eq!(a.seen, b.seen);
    assert!(r.mean_kld.abs() < 1e-12);
    let mut c = Uniform {
        vocab: 51,
        seen: vec![],
    };
    assert!(matches!(
        kl_divergence(&mut a, &mut c, &tokens, &protocol, None),
        Err(EvalError::VocabMismatch { .. })
    ));
}

#[test]
fn wrong_logits_length_is_a_typed_error() {
    struct Short;
    impl LogitsSource for Short {
        fn vocab_size(&self) -> usize {
            4
        }
        fn logits(&mut self, _: &[u32]) -> Result<Vec<f32>, SourceError> {
            Ok(vec![0.0; 3])
        }
    }
    let err = perplexity(&mut Short, &[0; 32], &PerplexityProtocol::new(8), None).unwrap_err();
    assert!(matches!(
        err,
        EvalError::BadLogitsLength {
            expected: 32,
            found: 3,
            ..
        }
    ));
}
