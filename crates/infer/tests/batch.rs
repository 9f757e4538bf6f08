//! Continuous batching: sequences evaluated together by [`Engine::forward_batch`] get the same
//! logits as each evaluated alone, whatever their lengths and positions.

mod common;

use shuku_infer::{BatchItem, Engine, EngineError};

fn engine() -> Engine {
    common::glassllm()
}

#[test]
fn batched_sequences_equal_each_alone() {
    let e = engine();
    let tok = |s: &str| e.tokenizer().encode(s, true, true).unwrap();
    let prompts = [
        tok("The Professor said"),
        tok("Once upon a time there was a glass"),
        tok("A"),
    ];
    // Alone: prompt, then two single-token steps.
    let mut alone = Vec::new();
    for p in &prompts {
        let mut s = e.new_session();
        let mut steps = vec![e.forward(&mut s, p, false).unwrap()];
        for t in [5u32, 9] {
            steps.push(e.forward(&mut s, &[t], false).unwrap());
        }
        alone.push(steps);
    }
    // Together: the first two prompts prefilled in one batch, the third joins at the next step
    // with its whole prompt while the others decode one token.
    let mut sessions: Vec<_> = (0..3).map(|_| e.new_session()).collect();
    let (s01, s2) = sessions.split_at_mut(2);
    let (s0, s1) = s01.split_at_mut(1);
    let out = e
        .forward_batch(&mut [
            BatchItem {
                session: &mut s0[0],
                tokens: &prompts[0],
            },
            BatchItem {
                session: &mut s1[0],
                tokens: &prompts[1],
            },
        ])
        .unwrap();
    assert_eq!(out[0], alone[0][0]);
    assert_eq!(out[1], alone[1][0]);
    let out = e
        .forward_batch(&mut [
            BatchItem {
                session: &mut s0[0],
                tokens: &[5],
            },
            BatchItem {
                session: &mut s2[0],
                tokens: &prompts[2],
            },
            BatchItem {
                session: &mut s1[0],
                tokens: &[5],
            },
        ])
        .unwrap();
    assert_eq!(out[0], alone[0][1]);
    assert_eq!(out[1], alone[2][0]);
    assert_eq!(out[2], alone[1][1]);
    let out = e
        .forward_batch(&mut [
            BatchItem {
                session: &mut s2[0],
                tokens: &[5],
            },
            BatchItem {
                session: &mut s0[0],
                tokens: &[9],
            },
            BatchItem {
                session: &mut s1[0],
                tokens: &[9],
            },
        ])
        .unwrap();
    assert_eq!(out[0], alone[2][1]);
    assert_eq!(out[1], alone[0][2]);
    assert_eq!(out[2], alone[1][2]);
    assert_eq!(sessions[0].len(), prompts[0].len() + 2);
}

#[test]
fn batches_are_checked_before_anything_runs() {
    let e = engine();
    let mut a = e.new_session();
    let mut b = e.new_session_with_context(2);
    let err = e
        .forward_batch(&mut [
            BatchItem {
                session: &mut a,
                tokens: &[1, 2],
            },
            BatchItem {
                session: &mut b,
                tokens: &[1, 2, 3],
            },
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ContextOverflow {
                needed: 3,
                context: 2
            }
        ),
        "{err}"
    );
    assert!(a.is_empty(), "nothing was evaluated");
    let err = e
        .forward_batch(&mut [BatchItem {
            session: &mut a,
            tokens: &[],
        }])
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest(_)), "{err}");
    let long = vec![1u32; 513];
    let mut c = e.new_session_with_context(1024);
    let err = e
        .forward_batch(&mut [BatchItem {
            session: &mut c,
            tokens: &long,
        }])
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest(_)), "{err}");
}
