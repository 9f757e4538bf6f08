//! AdamW against a hand-computed update; clipping; accumulation.

use candle_core::{Device, Tensor, Var};
use shuku_distill::optim::{decay_matrices_only, global_norm};
use shuku_distill::{clip_grad_norm, AdamW, AdamWConfig, GradAccumulator, Gradients};

fn vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn adamw_two_steps_match_hand_computation() {
    let dev = Device::Cpu;
    let w0 = [1.0, 2.0, 3.0, 4.0];
    let b0 = [0.5, -0.5];
    let w = Var::from_tensor(&Tensor::new(&[[1.0f64, 2.0], [3.0, 4.0]], &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.5f64, -0.5], &dev).unwrap()).unwrap();
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::new(
        vec![
            ("layer.weight".into(), w.clone()),
            ("layer.bias".into(), b.clone()),
        ],
        cfg,
        decay_matrices_only,
    )
    .unwrap();
    assert!(opt.params()[0].decay && !opt.params()[1].decay);

    let gw = [0.1, -0.2, 0.3, 0.0];
    let gb = [1.0, -2.0];
    let grads = |gw: &[f64], gb: &[f64]| {
        Gradients(vec![
            Some(Tensor::from_slice(gw, (2, 2), &dev).unwrap()),
            Some(Tensor::from_slice(gb, 2, &dev).unwrap()),
        ])
    };
    let lr = 0.01;
    // Hand-rolled reference (PyTorch AdamW semantics).
    let reference = |theta: &[f64], gs: &[&[f64]], decay: bool| -> Vec<f64> {
        let mut th = theta.to_vec();
        let mut m = vec![0.0; th.len()];
        let mut v = vec![0.0; th.len()];
        for (t, g) in gs.iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..th.len() {
                if decay {
                    th[i] *= 1.0 - lr * 0.1;
                }
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                th[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        th
    };

    opt.step(&grads(&gw, &gb), lr).unwrap();
    // After one step the bias-corrected update is g/(|g|+eps): ±lr per non-zero entry.
    let one = vec(w.as_tensor());
    assert!((one[0] - (1.0 * 0.999 - 0.01)).abs() < 1e-9);
    assert!((one[3] - 4.0 * 0.999).abs() < 1e-12);
    let exp_w = reference(&w0, &[&gw], true);
    let exp_b = reference(&b0, &[&gb], false);
    for (a, e) in one.iter().zip(&exp_w) {
        assert!((a - e).abs() < 1e-14);
    }
    for (a, e) in vec(b.as_tensor()).iter().zip(&exp_b) {
        assert!((a - e).abs() < 1e-14);
    }

    let gw2 = [-0.05, 0.4, 0.1, 1.0];
    let gb2 = [0.5, 0.5];
    opt.step(&grads(&gw2, &gb2), lr).unwrap();
    let exp_w = reference(&w0, &[&gw, &gw2], true);
    let exp_b = reference(&b0, &[&gb, &gb2], false);
    for (a, e) in vec(w.as_tensor()).iter().zip(&exp_w) {
        assert!((a - e).abs() < 1e-14, "{a} vs {e}");
    }
    for (a, e) in vec(b.as_tensor()).iter().zip(&exp_b) {
        assert!((a - e).abs() < 1e-14);
    }
    assert_eq!(opt.step_count(), 2);
}

#[test]
fn clipping_scales_to_target_norm() {
    let dev = Device::Cpu;
    let mut g = Gradients(vec![
        Some(Tensor::new(&[3.0f64], &dev).unwrap()),
        None,
        Some(Tensor::new(&[[4.0f64]], &dev).unwrap()),
    ]);
    let pre = clip_grad_norm(&mut g, 1.0).unwrap();
    assert!((pre - 5.0).abs() < 1e-12);
    assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-12);
    assert!((vec(g.0[0].as_ref().unwrap())[0] - 0.6).abs() < 1e-12);
    // Below the threshold nothing changes.
    let pre = clip_grad_norm(&mut g, 10.0).unwrap();
    assert!((pre - 1.0).abs() < 1e-12);
    assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn accumulation_averages() {
    let dev = Device::Cpu;
    let mut acc = GradAccumulator::new();
    acc.add(Gradients(vec![
        Some(Tensor::new(&[1.0f64, 2.0], &dev).unwrap()),
        None,
    ]))
    .unwrap();
    acc.add(Gradients(vec![
        Some(Tensor::new(&[3.0f64, 4.0], &dev).unwrap()),
        None,
    ]))
    .unwrap();
    assert_eq!(acc.count(), 2);
    let g = acc.finish().unwrap();
    assert_eq!(vec(g.0[0].as_ref().unwrap()), vec![2.0, 3.0]);
    assert!(g.0[1].is_none());
    assert_eq!(acc.count(), 0);
}

#[test]
fn duplicate_names_rejected() {
    let v = Var::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(AdamW::new(
        vec![("a".into(), v.clone()), ("a".into(), v)],
        AdamWConfig::default(),
        decay_matrices_only
    )
    .is_err());
}

/// The in-place f32 update equals the tensor-op update (run inside `composed_only`) to the bit, moments
/// included, over steps with and without weight decay.
#[test]
fn in_place_update_equals_the_tensor_ops() {
    let dev = Device::Cpu;
    let run = |composed: bool| -> Vec<Vec<f32>> {
        let w = Var::from_tensor(
            &Tensor::arange(0f32, 12.0, &dev)
                .unwrap()
                .reshape((3, 4))
                .unwrap(),
        )
        .unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32, -0.5, 2.0], &dev).unwrap()).unwrap();
        let params = vec![
            ("l.weight".to_string(), w.clone()),
            ("l.bias".to_string(), b.clone()),
        ];
        let mut opt = AdamW::new(params, AdamWConfig::default(), decay_matrices_only).unwrap();
        for step in 0..3 {
            let s = step as f32;
            let gw = Tensor::arange(0f32, 12.0, &dev)
                .unwrap()
                .affine(0.1, -0.4 + f64::from(s))
                .unwrap();
            let gb = Tensor::new(&[1.0f32 - s, -2.0, 0.25 * s], &dev).unwrap();
            let grads = Gradients(vec![Some(gw.reshape((3, 4)).unwrap()), Some(gb)]);
            if composed {
                shuku_model::ops::composed_only(|| opt.step(&grads, 0.01)).unwrap();
            } else {
                opt.step(&grads, 0.01).unwrap();
            }
        }
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![flat(w.as_tensor()), flat(b.as_tensor())];
        for p in opt.params() {
            out.push(flat(&p.m));
            out.push(flat(&p.v));
        }
        out
    };
    assert_eq!(run(false), run(true));
}
