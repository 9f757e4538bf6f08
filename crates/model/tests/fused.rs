//! The fused CPU kernels against the composed candle ops they replace (values and gradients), and their
//! gradients against central finite differences.

use candle_core::{Device, Tensor, Var};
use shuku_model::{fused, ops, Activation};
use shuku_testkit::TestRng;

/// A deterministic tensor of values in about [-scale, scale].
fn det(dims: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let mut rng = TestRng(seed);
    let v: Vec<f32> = (0..n).map(|_| rng.signed() * scale).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `Σ f(inputs) ⊙ r` for a fixed random `r`: a scalar whose gradient exercises every output.
fn projected(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) -> Tensor {
    let y = f(inputs);
    let r = det(y.dims(), 99, 1.0);
    (y * r).unwrap().sum_all().unwrap()
}

/// Checks `f` (built on `ops`, so it runs fused by default) against [`ops::composed_only`] in values and in
/// the gradients of every input listed in `differentiable`, then those gradients against finite
/// differences at a few coordinates.
fn check(
    name: &str,
    f: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    differentiable: &[usize],
    tol: f32,
) {
    check_against(
        name,
        f,
        &|x| ops::composed_only(|| f(x)),
        inputs,
        differentiable,
        tol,
    )
}

/// [`check`] against an explicit `reference`.
fn check_against(
    name: &str,
    f: &dyn Fn(&[Tensor]) -> Tensor,
    reference: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    differentiable: &[usize],
    tol: f32,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let fused_y = f(&ts);
    let composed_y = reference(&ts);
    let d = max_diff(&fused_y, &composed_y);
    assert!(d < tol, "{name}: values differ by {d}");

    let fused_g = projected(f, &ts).backward().unwrap();
    let composed_g = projected(reference, &ts).backward().unwrap();
    for &i in differentiable {
        let a = fused_g
            .get(&ts[i])
            .unwrap_or_else(|| panic!("{name}: no fused gradient for input {i}"));
        let b = composed_g.get(&ts[i]).expect("composed gradient");
        let d = max_diff(a, b);
        assert!(d < tol, "{name}: gradient of input {i} differs by {d}");

        // Central differences in f64 around a few coordinates.
        let base = inputs[i].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let grad = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let h = 1e-2f32;
        for c in [0, base.len() / 3, base.len() / 2, base.len() - 1] {
            let eval = |delta: f32| -> f64 {
                let mut v = base.clone();
                v[c] += delta;
                let mut moved = ts.clone();
                moved[i] = Tensor::from_vec(v, inputs[i].dims(), &Device::Cpu).unwrap();
                f64::from(projected(f, &moved).to_scalar::<f32>().unwrap())
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * f64::from(h));
            let analytic = f64::from(grad[c]);
            assert!(
                (numeric - analytic).abs() < 2e-2 * (1.0 + analytic.abs()),
                "{name}: d/dx[{c}] of input {i}: analytic {analytic}, numeric {numeric}"
            );
        }
    }
}

#[test]
fn rms_norm_matches_the_composed_op() {
    let f = |x: &[Tensor]| ops::rms_norm(&x[0], &x[1], 1e-5).unwrap();
    let w = (det(&[24], 2, 0.3) + 1.0).unwrap();
    check(
        "rms_norm",
        &f,
        &[det(&[3, 5, 24], 1, 2.0), w],
        &[0, 1],
        1e-4,
    );
}

#[test]
fn rope_matches_the_composed_op() {
    let (cos, sin) = ops::rope_tables(&[1.0, 0.3, 0.05, 0.001], 1.0, 2, 7, &Device::Cpu).unwrap();
    let f = |x: &[Tensor]| ops::rope(&x[0], &x[1], &x[2]).unwrap();
    check(
        "rope",
        &f,
        &[det(&[2, 7, 3, 8], 3, 1.0), cos, sin],
        &[0],
        1e-5,
    );
}

#[test]
fn gated_activations_match_the_composed_ops() {
    for act in [Activation::Silu, Activation::GeluTanh] {
        let f = move |x: &[Tensor]| ops::gated(&x[0], &x[1], act).unwrap();
        let inputs = [det(&[4, 33], 4, 4.0), det(&[4, 33], 5, 2.0)];
        check(&format!("{act:?}"), &f, &inputs, &[0, 1], 1e-5);
    }
}

/// `(batch, queries, keys, heads, kv heads, head dim, window)` cases: plain causal, grouped heads, cached
/// positions, sliding windows, and more query rows than one block of the kernel.
type AttentionCase = (usize, usize, usize, usize, usize, usize, Option<usize>);

const ATTENTION_CASES: [AttentionCase; 6] = [
    (2, 9, 9, 4, 2, 8, None),
    (1, 5, 5, 2, 2, 4, Some(2)),
    (2, 3, 7, 4, 2, 8, None),
    (1, 4, 9, 3, 1, 4, Some(3)),
    (1, 1, 6, 2, 1, 4, None),
    (1, 70, 70, 2, 1, 4, Some(20)),
];

#[test]
fn attention_matches_the_composed_op() {
    for (i, (b, t, s, h, kv, d, window)) in ATTENTION_CASES.into_iter().enumerate() {
        let f = move |x: &[Tensor]| ops::attention(&x[0], &x[1], &x[2], 0.4, window).unwrap();
        let inputs = [
            det(&[b, t, h, d], 10 + i as u64, 1.5),
            det(&[b, s, kv, d], 20 + i as u64, 1.5),
            det(&[b, s, kv, d], 30 + i as u64, 1.0),
        ];
        check(
            &format!("attention case {i}"),
            &f,
            &inputs,
            &[0, 1, 2],
            1e-5,
        );
    }
}

#[test]
fn cross_entropy_matches_the_composed_op() {
    let targets = Tensor::new(&[3u32, 0, 10, 7, 7, 1], &Device::Cpu).unwrap();
    let f = move |x: &[Tensor]| ops::cross_entropy(&x[0], &targets).unwrap();
    check("cross_entropy", &f, &[det(&[6, 11], 6, 5.0)], &[0], 1e-5);
}

#[test]
fn cross_entropy_ignores_rows_and_averages_over_the_rest() {
    let logits = det(&[4, 5], 7, 3.0);
    let all = fused::cross_entropy(&logits, &[Some(1), None, Some(4), None]).unwrap();
    let kept = Tensor::cat(
        &[
            logits.narrow(0, 0, 1).unwrap(),
            logits.narrow(0, 2, 1).unwrap(),
        ],
        0,
    )
    .unwrap();
    let reference = fused::cross_entropy(&kept, &[Some(1), Some(4)]).unwrap();
    assert!(max_diff(&all, &reference) < 1e-6);
    // Ignored rows get no gradient.
    let v = Var::from_tensor(&logits).unwrap();
    let g = fused::cross_entropy(v.as_tensor(), &[Some(1), None, Some(4), None])
        .unwrap()
        .backward()
        .unwrap();
    let g = g.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert!(g[1].iter().chain(&g[3]).all(|&x| x == 0.0));
    assert!(g[0].iter().any(|&x| x != 0.0));
    assert!(fused::cross_entropy(&logits, &[Some(5), None, None, None]).is_err());
    let none = fused::cross_entropy(&logits, &[None; 4]).unwrap();
    assert_eq!(none.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn forward_kl_matches_the_composed_formula() {
    let teacher = det(&[5, 9], 8, 4.0);
    let temperature = 2.0;
    let f = |x: &[Tensor]| fused::forward_kl(&x[0], &x[1], temperature).unwrap();
    let reference = |x: &[Tensor]| -> Tensor {
        let ls = ops::log_softmax_last_dim(&(&x[0] / temperature).unwrap()).unwrap();
        let lt = ops::log_softmax_last_dim(&(x[1].detach() / temperature).unwrap()).unwrap();
        let kl = (lt.exp().unwrap() * (lt - ls).unwrap()).unwrap();
        let kl = kl.sum(1).unwrap().mean_all().unwrap();
        kl.affine(temperature * temperature, 0.0).unwrap()
    };
    let inputs = [det(&[5, 9], 9, 4.0), teacher];
    check_against("forward_kl", &f, &reference, &inputs, &[0], 1e-5);
}

#[test]
fn head_loss_matches_the_composed_head_and_losses() {
    let targets = [Some(3u32), None, Some(10), Some(0), Some(10), Some(6), None];
    let teacher = det(&[7, 11], 60, 4.0);
    let hidden = det(&[7, 12], 61, 1.0);
    let weight = det(&[11, 12], 62, 1.0);
    let composed_hard = |x: &[Tensor]| -> Tensor {
        let logits = ops::linear(&x[0], &x[1]).unwrap();
        fused::cross_entropy(&logits, &targets).unwrap()
    };
    let fused_hard = |x: &[Tensor]| {
        fused::head_loss(&x[0], &x[1], &targets, None)
            .unwrap()
            .total
    };
    let inputs = [hidden, weight];
    check_against(
        "head_loss (hard)",
        &fused_hard,
        &composed_hard,
        &inputs,
        &[0, 1],
        1e-5,
    );

    let (temperature, alpha) = (2.0, 0.7);
    let soft = fused::SoftTargets {
        teacher: teacher.clone(),
        temperature,
        alpha,
    };
    let composed_mixed = |x: &[Tensor]| -> Tensor {
        let logits = ops::linear(&x[0], &x[1]).unwrap();
        let hard = fused::cross_entropy(&logits, &targets).unwrap();
        let kl = fused::forward_kl(&logits, &teacher, temperature).unwrap();
        ((kl * alpha).unwrap() + (hard * (1.0 - alpha)).unwrap()).unwrap()
    };
    let fused_mixed = |x: &[Tensor]| {
        fused::head_loss(&x[0], &x[1], &targets, Some(&soft))
            .unwrap()
            .total
    };
    check_against(
        "head_loss (KD)",
        &fused_mixed,
        &composed_mixed,
        &inputs,
        &[0, 1],
        1e-5,
    );

    // The reported terms are the two losses' values.
    let out = fused::head_loss(&inputs[0], &inputs[1], &targets, Some(&soft)).unwrap();
    let logits = ops::linear(&inputs[0], &inputs[1]).unwrap();
    let hard = fused::cross_entropy(&logits, &targets).unwrap();
    let kl = fused::forward_kl(&logits, &teacher, temperature).unwrap();
    assert!((out.hard - f64::from(hard.to_scalar::<f32>().unwrap())).abs() < 1e-5);
    assert!((out.soft.unwrap() - f64::from(kl.to_scalar::<f32>().unwrap())).abs() < 1e-5);

    // Bad inputs are errors, not panics.
    let bad = [Some(11u32), None, None, None, None, None, None];
    assert!(fused::head_loss(&inputs[0], &inputs[1], &bad, None).is_err());
    assert!(fused::head_loss(&inputs[0], &inputs[1], &targets[..6], None).is_err());
    assert!(fused::head_loss(&inputs[0], &inputs[0], &targets, None).is_err());
    let wrong_teacher = fused::SoftTargets {
        teacher: det(&[7, 10], 63, 1.0),
        temperature,
        alpha,
    };
    assert!(fused::head_loss(&inputs[0], &inputs[1], &targets, Some(&wrong_teacher)).is_err());
}

#[test]
fn gated_projection_matches_the_composed_ops() {
    for act in [Activation::Silu, Activation::GeluTanh] {
        let f = move |x: &[Tensor]| ops::gated_projection(&x[0], &x[1], &x[2], act).unwrap();
        let inputs = [
            det(&[6, 10], 70, 1.5),
            det(&[13, 10], 71, 1.0),
            det(&[13, 10], 72, 1.0),
        ];
        check(
            &format!("{act:?} projection"),
            &f,
            &inputs,
            &[0, 1, 2],
            1e-5,
        );
    }
    let x = det(&[6, 10], 73, 1.0);
    assert!(fused::gated_projection(
        &x,
        &det(&[13, 9], 74, 1.0),
        &det(&[13, 9], 75, 1.0),
        Activation::Silu
    )
    .is_err());
    assert!(fused::gated_projection(
        &x,
        &det(&[13, 10], 74, 1.0),
        &det(&[12, 10], 75, 1.0),
        Activation::Silu
    )
    .is_err());
}

#[test]
fn head_projection_matches_the_composed_ops() {
    let (b, t, heads, d) = (2, 5, 3, 4);
    let (cos, sin) = ops::rope_tables(&[1.0, 0.2], 1.0, 3, t, &Device::Cpu).unwrap();
    for rotated in [true, false] {
        let (cos, sin) = (cos.clone(), sin.clone());
        let f = move |x: &[Tensor]| {
            let rope = rotated.then_some((&cos, &sin));
            ops::head_projection(&x[0], &x[1], (b, t, heads, d), rope).unwrap()
        };
        let inputs = [det(&[b * t, 7], 80, 1.0), det(&[heads * d, 7], 81, 1.0)];
        check(
            &format!("head_projection, rope {rotated}"),
            &f,
            &inputs,
            &[0, 1],
            1e-5,
        );
    }
    let x = det(&[b * t, 7], 82, 1.0);
    let w = det(&[heads * d, 7], 83, 1.0);
    assert!(fused::head_projection(&x, &w, (b, t, heads + 1, d), None).is_err());
    assert!(fused::head_projection(&x, &w, (b, t + 1, heads, d), None).is_err());
    let short = cos.narrow(0, 0, t - 1).unwrap();
    assert!(fused::head_projection(&x, &w, (b, t, heads, d), Some((&short, &short))).is_err());
}

#[test]
fn linear_residual_matches_the_composed_ops() {
    let f = |x: &[Tensor]| ops::linear_residual(&x[0], &x[1], &x[2]).unwrap();
    let inputs = [
        det(&[7, 12], 90, 1.0),
        det(&[5, 12], 91, 1.0),
        det(&[7, 5], 92, 1.0),
    ];
    check("linear_residual", &f, &inputs, &[0, 1, 2], 1e-5);
    let wrong = det(&[7, 4], 93, 1.0);
    assert!(fused::linear_residual(&inputs[0], &inputs[1], &wrong).is_err());
}

#[test]
fn linear_matches_the_composed_op() {
    let f = |x: &[Tensor]| ops::linear(&x[0], &x[1]).unwrap();
    check(
        "linear",
        &f,
        &[det(&[7, 12], 40, 1.0), det(&[5, 12], 41, 1.0)],
        &[0, 1],
        1e-5,
    );
}

#[test]
fn sum_of_squares_matches_the_composed_sum() {
    let x = det(&[300, 700], 50, 3.0);
    let fused = fused::sum_of_squares(&x).unwrap();
    let composed = x
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (fused - composed).abs() <= 1e-12 * composed,
        "{fused} vs {composed}"
    );
    let strided = x.t().unwrap();
    assert!((fused::sum_of_squares(&strided).unwrap() - composed).abs() <= 1e-12 * composed);
}
