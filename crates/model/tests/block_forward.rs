//! The layer-wise entry points (`embed`, `forward_block`, `head`) compose to the full forward, report the
//! same linear inputs, and `set_weight` swaps parameters in place.

mod common;

use candle_core::{Device, Tensor};
use shuku_model::{LinearObserver, Llama, ModelError, Result};

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

fn tokens() -> Tensor {
    Tensor::new(
        &[[3u32, 14, 15, 9, 26, 5, 35], [1, 2, 3, 4, 5, 6, 60]],
        &Device::Cpu,
    )
    .unwrap()
}

/// Records every observation: the weight names and the input.
#[derive(Default)]
struct Recorder(Vec<(Vec<String>, Tensor)>);

impl LinearObserver for Recorder {
    fn observe(&mut self, weights: &[&str], input: &Tensor) -> Result<()> {
        self.0.push((
            weights.iter().map(|w| w.to_string()).collect(),
            input.clone(),
        ));
        Ok(())
    }
}

/// `embed`, every `forward_block`, then `head`, optionally observed.
fn layerwise(model: &Llama, tokens: &Tensor, mut rec: Option<&mut Recorder>) -> Tensor {
    let (b, t) = tokens.dims2().unwrap();
    let mut x = model.embed(tokens).unwrap();
    assert_eq!(x.dims(), &[b * t, model.config().hidden_size]);
    for layer in 0..model.config().num_hidden_layers() {
        let obs = rec.as_deref_mut().map(|r| r as &mut dyn LinearObserver);
        x = model.forward_block(layer, &x, b, t, obs).unwrap();
    }
    let obs = rec.map(|r| r as &mut dyn LinearObserver);
    model.head(&x, b, t, obs).unwrap()
}

#[test]
fn layerwise_forward_equals_forward() {
    for (tied, bias) in [(false, false), (true, true), (false, true)] {
        let model = Llama::random(common::tiny_config(tied, bias), 21, &Device::Cpu).unwrap();
        let full = model.forward(&tokens(), None).unwrap();
        let composed = layerwise(&model, &tokens(), None);
        assert_eq!(composed.dims(), full.dims());
        let d = max_abs(&composed, &full);
        assert!(d < 1e-6, "tied={tied} bias={bias}: max abs diff {d}");
    }
}

#[test]
fn head_input_times_the_head_weight_equals_forward() {
    for (tied, bias) in [(false, false), (true, true)] {
        let model = Llama::random(common::tiny_config(tied, bias), 23, &Device::Cpu).unwrap();
        let full = model.forward(&tokens(), None).unwrap();
        let (hidden, weight) = model.forward_head_input(&tokens()).unwrap();
        let (b, t) = tokens().dims2().unwrap();
        assert_eq!(hidden.dims(), &[b * t, model.config().hidden_size]);
        let logits = hidden
            .matmul(&weight.t().unwrap())
            .unwrap()
            .reshape(full.dims())
            .unwrap();
        let d = max_abs(&logits, &full);
        assert!(d < 1e-5, "tied={tied}: max abs diff {d}");
    }
}

#[test]
fn layerwise_observations_match_forward_observed_and_block_linear_names() {
    let model = Llama::random(common::tiny_config(false, true), 22, &Device::Cpu).unwrap();
    let mut full = Recorder::default();
    model
        .forward_observed(&tokens(), None, Some(&mut full))
        .unwrap();
    let mut parts = Recorder::default();
    layerwise(&model, &tokens(), Some(&mut parts));

    assert_eq!(full.0.len(), parts.0.len());
    for ((names_a, in_a), (names_b, in_b)) in full.0.iter().zip(&parts.0) {
        assert_eq!(names_a, names_b);
        assert!(max_abs(in_a, in_b) < 1e-6, "{names_a:?}");
    }
    let mut expected: Vec<Vec<String>> = (0..model.config().num_hidden_layers())
        .flat_map(|l| model.block_linear_names(l).unwrap())
        .collect();
    expected.push(vec!["lm_head.weight".to_string()]);
    let observed: Vec<Vec<String>> = full.0.into_iter().map(|(n, _)| n).collect();
    assert_eq!(observed, expected);
    assert_eq!(
        model.block_linear_names(1).unwrap()[0],
        [
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.1.self_attn.v_proj.weight"
        ]
    );
}

#[test]
fn set_weight_replaces_a_parameter_and_checks_its_shape() {
    let model = Llama::random(common::tiny_config(false, false), 23, &Device::Cpu).unwrap();
    let before = model.forward(&tokens(), None).unwrap();
    let name = "model.layers.0.mlp.down_proj.weight";
    let params: std::collections::HashMap<_, _> = model.named_tensors().into_iter().collect();
    // A copy: `named_tensors` shares storage with the parameters, so it sees `set_weight`.
    let old = params[name].copy().unwrap();

    // Coarsely rounded weights, as a dequantized layer would be.
    let rounded = ((&old * 50.0).unwrap().round().unwrap() / 50.0).unwrap();
    model.set_weight(name, rounded.clone()).unwrap();
    let after = model.forward(&tokens(), None).unwrap();
    assert!(max_abs(&before, &after) > 1e-6, "logits unchanged");
    let stored: std::collections::HashMap<_, _> = model.named_tensors().into_iter().collect();
    assert_eq!(max_abs(&stored[name], &rounded), 0.0);

    // Restoring the original weight restores the logits; f64 input is converted.
    model
        .set_weight(name, old.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap();
    assert!(max_abs(&before, &model.forward(&tokens(), None).unwrap()) < 1e-6);

    let wrong = Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    match model.set_weight(name, wrong) {
        Err(ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
        }) => {
            assert_eq!(tensor, name);
            assert_eq!(expected, old.dims());
            assert_eq!(found, vec![3, 3]);
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    let unknown = model.set_weight("model.layers.9.mlp.up_proj.weight", old);
    assert!(matches!(unknown, Err(ModelError::MissingTensor { .. })));
}

#[test]
fn layerwise_entry_points_reject_bad_input() {
    let model = Llama::random(common::tiny_config(true, false), 24, &Device::Cpu).unwrap();
    let x = model.embed(&tokens()).unwrap();
    let layers = model.config().num_hidden_layers();
    assert!(matches!(
        model.forward_block(layers, &x, 2, 7, None),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.forward_block(0, &x, 7, 7, None),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        model.head(&x, 2, 6, None),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(model.block_linear_names(layers).is_err());
    let out_of_vocab = Tensor::new(&[[1u32, 61]], &Device::Cpu).unwrap();
    assert!(model.embed(&out_of_vocab).is_err());
    // Tied models have no separate head weight to replace.
    let head = Tensor::zeros((61, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.set_weight("lm_head.weight", head),
        Err(ModelError::MissingTensor { .. })
    ));
}

#[test]
fn staged_forward_equals_forward_block_and_applies_weights_changed_between_groups() {
    let model = Llama::random(common::tiny_config(false, true), 22, &Device::Cpu).unwrap();
    let probe = Llama::random(common::tiny_config(false, true), 22, &Device::Cpu).unwrap();
    let embed = |t: Vec<[u32; 7]>| {
        let flat: Vec<u32> = t.concat();
        let tokens = Tensor::from_vec(flat, (t.len(), 7), &Device::Cpu).unwrap();
        model.embed(&tokens).unwrap()
    };
    // Two batches of different shapes, as a compressor would hold them.
    let (x1, x2) = (
        embed(vec![[3, 14, 15, 9, 26, 5, 35], [1, 2, 3, 4, 5, 6, 60]]),
        embed(vec![[7, 7, 1, 0, 2, 9, 11]]),
    );
    let mut batches = vec![(x1.clone(), 2, 7), (x2.clone(), 1, 7)];
    let mut seen = Vec::new();
    model
        .forward_block_staged(0, &mut batches, &mut |names, inputs| {
            seen.push((
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                inputs.len(),
            ));
            Ok(())
        })
        .unwrap();
    let expected: Vec<(Vec<String>, usize)> = model
        .block_linear_names(0)
        .unwrap()
        .into_iter()
        .map(|g| (g, 2))
        .collect();
    assert_eq!(seen, expected);
    assert!(
        max_abs(
            &batches[0].0,
            &model.forward_block(0, &x1, 2, 7, None).unwrap()
        ) < 1e-6
    );
    assert!(
        max_abs(
            &batches[1].0,
            &model.forward_block(0, &x2, 1, 7, None).unwrap()
        ) < 1e-6
    );

    // Zeroing the up projection when its group comes up changes everything after it: the result is
    // forward_block of a model whose up projection was zero from the start.
    let up = "model.layers.1.mlp.up_proj.weight";
    let zeros = |name: &str| {
        let (_, t) = model
            .named_tensors()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap();
        t.zeros_like().unwrap()
    };
    let mut batches = vec![(x1.clone(), 2, 7)];
    model
        .forward_block_staged(1, &mut batches, &mut |names, _| {
            if names.contains(&up) {
                model.set_weight(up, zeros(up))?;
            }
            Ok(())
        })
        .unwrap();
    probe.set_weight(up, zeros(up)).unwrap();
    let reference = probe.forward_block(1, &x1, 2, 7, None).unwrap();
    assert!(max_abs(&batches[0].0, &reference) < 1e-6);
    assert!(matches!(
        model.forward_block_staged(9, &mut batches, &mut |_, _| Ok(())),
        Err(ModelError::InvalidInput(_))
    ));
}
