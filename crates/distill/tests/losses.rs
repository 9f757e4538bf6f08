//! Losses against closed forms, and their gradients against finite differences.

use candle_core::{DType, Device, Tensor, Var};
use shuku_distill::loss::{log_softmax, mean_normalized_entropy};
use shuku_distill::{
    cross_entropy, forward_kl, generalized_jsd, reverse_kl, DistillError, DistillLoss,
    DivergenceKind, HiddenMse, SplitMix64, TemperatureSchedule,
};

fn t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn softmax(x: &[f64], temp: f64) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| ((v - m) / temp).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
}

const PT: [f64; 3] = [0.7, 0.2, 0.1];
const PS: [f64; 3] = [0.5, 0.3, 0.2];

fn logits(p: &[f64]) -> Tensor {
    t(&p.iter().map(|x| x.ln()).collect::<Vec<_>>())
}

#[test]
fn forward_and_reverse_kl_match_closed_form() {
    let f = scalar(&forward_kl(&logits(&PS), &logits(&PT), 1.0).unwrap());
    let expect = 0.7 * (0.7f64 / 0.5).ln() + 0.2 * (0.2f64 / 0.3).ln() + 0.1 * (0.1f64 / 0.2).ln();
    assert!((f - expect).abs() < 1e-12, "{f} vs {expect}");
    let r = scalar(&reverse_kl(&logits(&PS), &logits(&PT), 1.0).unwrap());
    let expect = 0.5 * (0.5f64 / 0.7).ln() + 0.3 * (0.3f64 / 0.2).ln() + 0.2 * (0.2f64 / 0.1).ln();
    assert!((r - expect).abs() < 1e-12, "{r} vs {expect}");
}

#[test]
fn jsd_matches_closed_form_is_symmetric_and_bounded() {
    let beta = 0.3;
    let m: Vec<f64> = PT
        .iter()
        .zip(PS)
        .map(|(a, b)| beta * a + (1.0 - beta) * b)
        .collect();
    let expect = beta * kl(&PT, &m) + (1.0 - beta) * kl(&PS, &m);
    let got = scalar(&generalized_jsd(&logits(&PS), &logits(&PT), beta, 1.0).unwrap());
    assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");

    let a = scalar(&generalized_jsd(&logits(&PS), &logits(&PT), 0.5, 1.0).unwrap());
    let b = scalar(&generalized_jsd(&logits(&PT), &logits(&PS), 0.5, 1.0).unwrap());
    assert!((a - b).abs() < 1e-14);

    // Nearly disjoint supports approach, but never exceed, ln 2.
    let far =
        scalar(&generalized_jsd(&t(&[40.0, 0.0, 0.0]), &t(&[0.0, 0.0, 40.0]), 0.5, 1.0).unwrap());
    assert!(far <= std::f64::consts::LN_2 + 1e-12 && far > 0.69, "{far}");
    assert!(matches!(
        generalized_jsd(&logits(&PS), &logits(&PT), 1.0, 1.0),
        Err(DistillError::InvalidConfig(_))
    ));
}

#[test]
fn temperature_scales_by_t_squared() {
    let s = [1.0, -0.5, 2.0];
    let te = [0.3, 1.2, -1.0];
    for temp in [0.5, 2.0, 4.0] {
        let (ps, pt) = (softmax(&s, temp), softmax(&te, temp));
        let f = scalar(&forward_kl(&t(&s), &t(&te), temp).unwrap());
        assert!((f - temp * temp * kl(&pt, &ps)).abs() < 1e-12);
        let r = scalar(&reverse_kl(&t(&s), &t(&te), temp).unwrap());
        assert!((r - temp * temp * kl(&ps, &pt)).abs() < 1e-12);
    }
}

#[test]
fn leading_dims_are_flattened_and_averaged() {
    // [2, 2, 3]: four positions, averaged.
    let s = Tensor::new(
        &[
            [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
            [[0.5, 0.5, 0.0], [0.0, 0.0, 3.0]],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let te = s.flip_last();
    let got = scalar(&forward_kl(&s, &te, 1.0).unwrap());
    let rows_s: Vec<Vec<f64>> = s.reshape((4, 3)).unwrap().to_vec2().unwrap();
    let rows_t: Vec<Vec<f64>> = te.reshape((4, 3)).unwrap().to_vec2().unwrap();
    let expect: f64 = rows_s
        .iter()
        .zip(&rows_t)
        .map(|(a, b)| kl(&softmax(b, 1.0), &softmax(a, 1.0)))
        .sum::<f64>()
        / 4.0;
    assert!((got - expect).abs() < 1e-12);
}

trait FlipLast {
    fn flip_last(&self) -> Tensor;
}
impl FlipLast for Tensor {
    fn flip_last(&self) -> Tensor {
        let idx = Tensor::new(&[2u32, 1, 0], self.device()).unwrap();
        self.index_select(&idx, 2).unwrap()
    }
}

#[test]
fn cross_entropy_with_ignore_index() {
    let x = Tensor::new(
        &[[1.0f64, 2.0, 0.5], [0.0, 0.0, 0.0], [3.0, -1.0, 0.0]],
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::new(&[1u32, 99, 0], &Device::Cpu).unwrap();
    let got = scalar(&cross_entropy(&x, &y, Some(99)).unwrap());
    let expect =
        (-softmax(&[1.0, 2.0, 0.5], 1.0)[1].ln() - softmax(&[3.0, -1.0, 0.0], 1.0)[0].ln()) / 2.0;
    assert!((got - expect).abs() < 1e-12);
    // Without ignore_index, 99 is out of range: a typed error, not a panic.
    assert!(matches!(
        cross_entropy(&x, &y, None),
        Err(DistillError::TokenOutOfVocab {
            token: 99,
            vocab: 3
        })
    ));
    // All ignored: zero, not NaN.
    let all = Tensor::new(&[99u32, 99, 99], &Device::Cpu).unwrap();
    assert_eq!(scalar(&cross_entropy(&x, &all, Some(99)).unwrap()), 0.0);
}

/// The loss from the head's inputs equals the loss on the logits they make, fused (forward KL and the
/// cross-entropy alone) or not (the other divergences), with ignored targets and typed errors.
#[test]
fn loss_from_the_head_equals_the_loss_on_its_logits() {
    let mut rng = SplitMix64::new(5);
    let f32s = |rng: &mut SplitMix64, dims: &[usize], scale: f64| {
        let v: Vec<f32> = random(rng, dims.iter().product(), scale)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    };
    let (hidden, weight) = (f32s(&mut rng, &[6, 5], 1.0), f32s(&mut rng, &[9, 5], 1.0));
    let teacher = f32s(&mut rng, &[2, 3, 9], 3.0);
    let targets = Tensor::new(&[[1u32, 8, 99], [0, 4, 4]], &Device::Cpu).unwrap();
    let logits = hidden
        .matmul(&weight.t().unwrap())
        .unwrap()
        .reshape((2, 3, 9))
        .unwrap();
    for kind in [DivergenceKind::Forward, DivergenceKind::Reverse] {
        let loss = DistillLoss {
            kind,
            ignore_index: Some(99),
            ..DistillLoss::default()
        };
        for teacher in [Some(&teacher), None] {
            let a = loss
                .compute_from_head(&hidden, &weight, teacher, &targets, 3)
                .unwrap();
            let b = loss.compute(&logits, teacher, &targets, 3).unwrap();
            assert!((scalar(&a.total) - scalar(&b.total)).abs() < 1e-5);
            assert!((a.hard - b.hard).abs() < 1e-5);
            assert_eq!(a.soft.is_some(), b.soft.is_some());
            assert!((a.soft.unwrap_or(0.0) - b.soft.unwrap_or(0.0)).abs() < 1e-5);
            assert_eq!(a.temperature, b.temperature);
        }
    }
    let loss = DistillLoss::default();
    let bad = Tensor::new(&[[1u32, 8, 99], [0, 4, 4]], &Device::Cpu).unwrap();
    assert!(matches!(
        loss.compute_from_head(&hidden, &weight, None, &bad, 0),
        Err(DistillError::TokenOutOfVocab {
            token: 99,
            vocab: 9
        })
    ));
    let narrow = f32s(&mut rng, &[2, 3, 8], 1.0);
    let kept = Tensor::new(&[[1u32, 8, 2], [0, 4, 4]], &Device::Cpu).unwrap();
    assert!(matches!(
        loss.compute_from_head(&hidden, &weight, Some(&narrow), &kept, 0),
        Err(DistillError::VocabMismatch {
            left: 9,
            right: 8,
            ..
        })
    ));
}

#[test]
fn teacher_student_vocab_mismatch_is_typed() {
    let s = Tensor::zeros((2, 4, 10), DType::F32, &Device::Cpu).unwrap();
    let te = Tensor::zeros((2, 4, 12), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        forward_kl(&s, &te, 1.0),
        Err(DistillError::VocabMismatch {
            left: 10,
            right: 12,
            ..
        })
    ));
    let y = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        DistillLoss::default().compute(&s, Some(&te), &y, 0),
        Err(DistillError::VocabMismatch { .. })
    ));
}

#[test]
fn temperature_schedules() {
    let dummy = t(&[0.0, 0.0]);
    let lin = TemperatureSchedule::Linear {
        from: 4.0,
        to: 1.0,
        steps: 10,
    };
    assert_eq!(lin.temperature(0, &dummy).unwrap(), 4.0);
    assert_eq!(lin.temperature(10, &dummy).unwrap(), 1.0);
    let cos = TemperatureSchedule::Cosine {
        from: 4.0,
        to: 1.0,
        steps: 10,
    };
    assert_eq!(cos.temperature(0, &dummy).unwrap(), 4.0);
    assert!((cos.temperature(5, &dummy).unwrap() - 2.5).abs() < 1e-12);
    assert_eq!(cos.temperature(20, &dummy).unwrap(), 1.0);

    let ad = TemperatureSchedule::AdaptiveEntropy {
        base: 2.0,
        min: 0.5,
        max: 10.0,
    };
    let uniform = t(&[0.0; 8]);
    let peaked = t(&[30.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert!((mean_normalized_entropy(&uniform).unwrap() - 1.0).abs() < 1e-12);
    assert!((ad.temperature(0, &uniform).unwrap() - 1.0).abs() < 1e-9);
    assert!((ad.temperature(0, &peaked).unwrap() - 3.0).abs() < 1e-9);
    let clamped = TemperatureSchedule::AdaptiveEntropy {
        base: 2.0,
        min: 1.5,
        max: 2.5,
    };
    assert_eq!(clamped.temperature(0, &peaked).unwrap(), 2.5);
    assert!(TemperatureSchedule::Constant(0.0)
        .temperature(0, &dummy)
        .is_err());
}

fn random(rng: &mut SplitMix64, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) * scale)
        .collect()
}

#[test]
fn kd_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let mut rng = SplitMix64::new(3);
    let shape = (2, 3, 5);
    let s0 = random(&mut rng, 30, 2.0);
    let teacher = Tensor::from_vec(random(&mut rng, 30, 2.0), shape, &dev).unwrap();
    let targets = Tensor::new(&[[0u32, 4, 2], [1, 3, 7]], &dev).unwrap();
    for kind in [
        DivergenceKind::Forward,
        DivergenceKind::Reverse,
        DivergenceKind::Jsd { beta: 0.3 },
    ] {
        let loss = DistillLoss {
            kind,
            alpha: 0.6,
            temperature: TemperatureSchedule::Constant(1.7),
            ignore_index: Some(7),
        };
        let f = |v: &[f64]| -> f64 {
            let x = Tensor::from_vec(v.to_vec(), shape, &dev).unwrap();
            scalar(&loss.compute(&x, Some(&teacher), &targets, 0).unwrap().total)
        };
        let var = Var::from_tensor(&Tensor::from_vec(s0.clone(), shape, &dev).unwrap()).unwrap();
        let out = loss
            .compute(var.as_tensor(), Some(&teacher), &targets, 0)
            .unwrap();
        let grads = out.total.backward().unwrap();
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            grads.get(&teacher).is_none(),
            "teacher must not receive gradients"
        );
        let h = 1e-5;
        for i in 0..s0.len() {
            let (mut p, mut m) = (s0.clone(), s0.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (f(&p) - f(&m)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-7,
                "{kind:?} [{i}]: fd {fd} vs autograd {}",
                g[i]
            );
        }
    }
}

#[test]
fn log_softmax_is_stable() {
    let x = t(&[1000.0, 0.0, -1000.0]);
    let v: Vec<f64> = log_softmax(&x).unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(v[0].abs() < 1e-12);
}

#[test]
fn hidden_mse_projects_and_learns_gradients() {
    let dev = Device::Cpu;
    let h = HiddenMse::new(4, 6, 1, DType::F64, &dev).unwrap();
    assert_eq!(h.parameters().len(), 2);
    let s = Tensor::ones((2, 3, 4), DType::F64, &dev).unwrap();
    let te = Tensor::zeros((2, 3, 6), DType::F64, &dev).unwrap();
    let l = h.loss(&s, &te).unwrap();
    let grads = l.backward().unwrap();
    for (_, v) in h.parameters() {
        assert!(grads.get(v.as_tensor()).is_some());
    }
    let same = HiddenMse::new(4, 4, 1, DType::F64, &dev).unwrap();
    assert!(same.proj.is_none());
    assert!(matches!(
        same.loss(&s, &te),
        Err(DistillError::ShapeMismatch { .. })
    ));
}
