//! GPTQ on the embedded base model: its bytes decode to exactly the weights it leaves in the
//! model, and the quantized model's logits on held-out text are closer to the full-precision
//! model's than round-to-nearest's into the same format.

use candle_core::{Device, Tensor};
use shuku_model::{Llama, Tokenizer};
use shuku_quantize::{gptq, GptqOptions, GptqTarget};
use shuku_quants::QuantType;

fn base_dir() -> std::path::PathBuf {
    shuku_testkit::workspace_dir().join("assets/shuku-base")
}

/// Calibration chunks from the start of the corpus, evaluation chunks from its held-out end.
fn token_chunks() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let text = std::fs::read_to_string(
        shuku_testkit::workspace_dir().join("assets/corpus/shakespeare.txt"),
    )
    .unwrap();
    let tok = Tokenizer::from_file(base_dir()).unwrap();
    let head: String = text.chars().take(20_000).collect();
    let tail: String = text
        .chars()
        .rev()
        .take(6_000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let cut = |s: &str, n: usize| -> Vec<Vec<u32>> {
        let ids = tok.encode(s, false).unwrap();
        ids.chunks_exact(64).take(n).map(<[u32]>::to_vec).collect()
    };
    (cut(&head, 12), cut(&tail, 4))
}

fn logits(model: &Llama, chunks: &[Vec<u32>]) -> Vec<f32> {
    chunks
        .iter()
        .flat_map(|c| {
            let t = Tensor::from_vec(c.clone(), (1, c.len()), &Device::Cpu).unwrap();
            model
                .forward(&t, None)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

fn linears(model: &Llama) -> Vec<String> {
    (0..model.config().num_hidden_layers())
        .flat_map(|l| model.block_linear_names(l).unwrap().into_iter().flatten())
        .collect()
}

fn weight(model: &Llama, name: &str) -> Tensor {
    model
        .named_tensors()
        .into_iter()
        .find_map(|(n, t)| (n == name).then_some(t))
        .unwrap()
}

#[test]
fn gptq_bytes_decode_to_the_model_and_beat_round_to_nearest() {
    let (calib, eval) = token_chunks();
    let reference = logits(
        &Llama::from_hf_dir(base_dir(), &Device::Cpu).unwrap(),
        &eval,
    );
    for ty in [QuantType::Q4_0, QuantType::Q4_K, QuantType::Q3_K] {
        // Round to nearest, the format's own quantizer.
        let rtn = Llama::from_hf_dir(base_dir(), &Device::Cpu).unwrap();
        for name in linears(&rtn) {
            let w = weight(&rtn, &name);
            let (rows, cols) = w.dims2().unwrap();
            let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bytes = ty.quantize(&v, cols, None).unwrap();
            let mut back = vec![0f32; v.len()];
            ty.dequantize(&bytes, &mut back).unwrap();
            rtn.set_weight(
                &name,
                Tensor::from_vec(back, (rows, cols), &Device::Cpu).unwrap(),
            )
            .unwrap();
        }

        let model = Llama::from_hf_dir(base_dir(), &Device::Cpu).unwrap();
        let targets: Vec<GptqTarget> = linears(&model)
            .into_iter()
            .map(|hf_name| GptqTarget {
                hf_name,
                ty,
                importance: None,
            })
            .collect();
        let bytes = gptq(
            &model,
            &targets,
            &GptqOptions::new(calib.clone()),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(bytes.len(), targets.len());
        for t in &targets {
            let w = weight(&model, &t.hf_name)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut back = vec![0f32; w.len()];
            ty.dequantize(&bytes[&t.hf_name], &mut back).unwrap();
            assert!(
                w.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} {}: the bytes do not decode to the model's weights",
                t.hf_name
            );
        }
        let (e_rtn, e_gptq) = (
            mse(&logits(&rtn, &eval), &reference),
            mse(&logits(&model, &eval), &reference),
        );
        assert!(
            e_gptq < 0.8 * e_rtn,
            "{ty}: GPTQ logit MSE {e_gptq:.4e} is not clearly below round-to-nearest's {e_rtn:.4e}"
        );
    }
}
