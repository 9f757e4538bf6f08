//! The model's weights as plain row-major `f32` arrays under their HF names, the form both exporters
//! lay out and quantize.

use shuku_model::Llama;

use crate::error::{ExportError, Result};

/// One weight.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// HF name.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Rows and columns of a 2-D weight (`[out, in]` for a linear layer).
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [r, c] => (*r, *c),
            [n] => (1, *n),
            _ => (self.data.len(), 1),
        }
    }

    /// Row `r` of a 2-D weight.
    pub fn row(&self, r: usize) -> &[f32] {
        let cols = self.rows_cols().1;
        &self.data[r * cols..(r + 1) * cols]
    }

    /// Element count.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Every weight of `model` as stored in HF files ([`Llama::file_tensors`]), copied to the host as `f32`.
pub fn host_tensors(model: &Llama) -> Result<Vec<HostTensor>> {
    model
        .file_tensors()?
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let data = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(HostTensor { name, shape, data })
        })
        .collect()
}

/// Checks that every matrix's input width is a whole number of quantization groups, before anything is
/// written.
pub fn check_group_size(tensors: &[HostTensor], group_size: usize) -> Result<()> {
    for t in tensors.iter().filter(|t| is_matrix(t)) {
        let width = t.rows_cols().1;
        if width % group_size != 0 {
            return Err(ExportError::GroupSize {
                tensor: t.name.clone(),
                width,
                group_size,
            });
        }
    }
    Ok(())
}

/// Whether an HF weight is a matrix a linear layer or the embedding multiplies with (quantizable), as
/// opposed to a norm gain or a bias.
pub fn is_matrix(t: &HostTensor) -> bool {
    t.shape.len() == 2 && !t.name.contains("norm")
}
