//! Every parameter must receive a non-zero gradient: proves no fused, non-differentiable op sits in the
//! forward.

mod common;

use candle_core::{Device, Tensor};
use shuku_model::{ops, Llama};

fn check_all_parameters_get_gradients(tied: bool, bias: bool) {
    let config = common::tiny_config(tied, bias);
    let model = Llama::random(config, 7, &Device::Cpu).unwrap();
    let tokens = Tensor::new(
        &[[3u32, 14, 15, 9, 26, 5], [1, 2, 3, 4, 5, 6]],
        &Device::Cpu,
    )
    .unwrap();
    let targets = Tensor::new(&[14u32, 15, 9, 26, 5, 35, 2, 3, 4, 5, 6, 7], &Device::Cpu).unwrap();
    let logits = model.forward(&tokens, None).unwrap();
    let loss = ops::cross_entropy(&logits.reshape((12, 61)).unwrap(), &targets).unwrap();
    let grads = loss.backward().unwrap();
    let params = model.parameters();
    let expected = 1 + 2 * (if bias { 12 } else { 9 }) + 1 + usize::from(!tied);
    assert_eq!(params.len(), expected);
    for (name, var) in params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name} (tied={tied}, bias={bias})"));
        assert_eq!(g.dims(), var.dims(), "{name}");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(
            norm.is_finite() && norm > 0.0,
            "zero/NaN gradient for {name}: {norm}"
        );
    }
}

#[test]
fn untied_model_backpropagates_to_every_parameter() {
    check_all_parameters_get_gradients(false, false);
}

#[test]
fn tied_model_backpropagates_to_every_parameter() {
    check_all_parameters_get_gradients(true, false);
}

#[test]
fn qkv_bias_model_backpropagates_to_every_parameter() {
    check_all_parameters_get_gradients(false, true);
}
