//! Reading a linear weight out of the model as a row-major `Vec` and writing it back.

use candle_core::Tensor;
use shuku_model::Llama;

use crate::error::Result;

/// The weight `name` as `(values, rows, cols)`, row-major `[out, in]`.
pub fn read_weight(model: &Llama, name: &str) -> Result<(Vec<f32>, usize, usize)> {
    let t = model.weight(name)?;
    let (rows, cols) = t.dims2()?;
    Ok((t.flatten_all()?.to_vec1::<f32>()?, rows, cols))
}

/// Writes `values` (`rows × cols`, row-major) into the weight `name`.
pub fn write_weight(
    model: &Llama,
    name: &str,
    values: Vec<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let t = Tensor::from_vec(values, (rows, cols), model.device())?;
    model.set_weight(name, t)?;
    Ok(())
}
