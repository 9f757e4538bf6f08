//! Calibration statistics equal a direct computation of the layer inputs.

mod common;

use candle_core::{Device, Tensor};
use shuku_model::{ops, Calibration, CalibrationOptions, Llama};

#[test]
fn sum_of_squares_and_hessian_match_direct_computation() {
    let config = common::tiny_config(false, true);
    let model = Llama::random(config.clone(), 13, &Device::Cpu).unwrap();
    let batches = vec![vec![1u32, 7, 9, 22, 40], vec![3u32, 3, 60]];
    let cal = Calibration::collect(&model, &batches, CalibrationOptions { hessian: true }).unwrap();

    // Every linear weight is covered; q/k/v and gate/up share one record.
    let linears = 2 * 7 + 1;
    assert_eq!(cal.weights().count(), linears);
    assert_eq!(cal.groups().len(), 2 * 4 + 1);
    let q = cal.get("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert!(std::ptr::eq(
        q,
        cal.get("model.layers.0.self_attn.v_proj.weight").unwrap()
    ));
    assert_eq!(q.n_tokens, 8);

    // Direct: layer 0's attention input is rms_norm(embedding) with the input_layernorm gain.
    let params: std::collections::HashMap<_, _> = model.named_tensors().into_iter().collect();
    let ids = Tensor::new(&[1u32, 7, 9, 22, 40, 3, 3, 60], &Device::Cpu).unwrap();
    let x = params["model.embed_tokens.weight"].embedding(&ids).unwrap();
    let h = ops::rms_norm(
        &x,
        &params["model.layers.0.input_layernorm.weight"],
        config.rms_norm_eps,
    )
    .unwrap();
    let direct = h.sqr().unwrap().sum(0).unwrap().to_vec1::<f32>().unwrap();
    for (a, b) in q.sum_sq.iter().zip(&direct) {
        assert!(
            (a - f64::from(*b)).abs() < 1e-4 * (1.0 + b.abs() as f64),
            "{a} vs {b}"
        );
    }

    // Hessian diagonal equals Σx² for every group.
    for g in cal.groups() {
        let hess = g.hessian.as_ref().unwrap();
        assert_eq!(hess.dims(), &[g.in_features(), g.in_features()]);
        let n = g.in_features();
        let diag: Vec<f32> = hess
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .step_by(n + 1)
            .collect();
        for (d, s) in diag.iter().zip(&g.sum_sq) {
            assert!(
                (f64::from(*d) - s).abs() < 1e-4 * (1.0 + s.abs()),
                "{:?}: {d} vs {s}",
                g.consumers
            );
        }
        // Symmetric.
        let asym = (hess - hess.t().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(asym < 1e-5);
    }

    // Without the Hessian option only Σx² is kept.
    let light = Calibration::collect(&model, &batches, CalibrationOptions::default()).unwrap();
    assert!(light.groups().iter().all(|g| g.hessian.is_none()));
}
