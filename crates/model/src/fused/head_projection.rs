//! An attention projection straight into heads, `x · Wᵀ` laid out `[B, T, heads, D]`, with RoPE applied
//! on the way out for queries and keys.
//!
//! Built from [`super::linear`], a reshape and [`super::rope`], a projection is three graph nodes, and
//! candle's backward pass hands each node's gradient over by adding it into a fresh zeroed buffer. As
//! one op the gradient is rotated back once and goes straight into the two products.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::linear::{new_product, product_gradients};
use super::rope::rotate;
use super::{cpu_tensor, f32s, with_f32s};

/// `x` `[B·T, H]` times `weight` `[heads·D, H]` transposed, as `[B, T, heads, D]`, rotated by the RoPE
/// tables `(cos, sin)` `[T, D]` when given; differentiable in `x` and `weight`.
pub fn head_projection(
    x: &Tensor,
    weight: &Tensor,
    (batch, seq, heads, head_dim): (usize, usize, usize, usize),
    rope: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Tensor> {
    let (n, h) = x.dims2()?;
    if n != batch * seq || weight.dims() != [heads * head_dim, h] {
        candle_core::bail!(
            "head_projection: input {:?} and weight {:?} do not make [{batch}, {seq}, {heads}, {head_dim}]",
            x.dims(),
            weight.dims()
        );
    }
    let tables = match rope {
        Some((cos, sin)) => {
            if cos.dims() != [seq, head_dim] || sin.dims() != [seq, head_dim] || head_dim % 2 != 0 {
                candle_core::bail!(
                    "head_projection: RoPE needs [{seq}, {head_dim}] tables with an even width, got {:?} and {:?}",
                    cos.dims(),
                    sin.dims()
                );
            }
            Some((cos.detach().contiguous()?, sin.detach().contiguous()?))
        }
        None => None,
    };
    let op = HeadProjection {
        dims: (batch, seq, heads, head_dim),
        tables,
    };
    x.contiguous()?.apply_op2(&weight.contiguous()?, op)
}

struct HeadProjection {
    dims: (usize, usize, usize, usize),
    /// RoPE's `(cos, sin)` `[T, D]`, contiguous.
    tables: Option<(Tensor, Tensor)>,
}

impl HeadProjection {
    /// `y` rotated (or, `transposed`, rotated back for the gradient) into a new buffer; `None` without
    /// tables.
    fn rotated(&self, y: &[f32], transposed: bool) -> candle_core::Result<Option<Vec<f32>>> {
        let Some((cos, sin)) = &self.tables else {
            return Ok(None);
        };
        let (_, seq, heads, _) = self.dims;
        with_f32s([cos, sin], "shuku-head-projection", |[cos, sin]| {
            let mut out = vec![0f32; y.len()];
            rotate(y, cos, sin, &mut out, seq, heads, transposed);
            Ok(Some(out))
        })
    }
}

impl CustomOp2 for HeadProjection {
    fn name(&self) -> &'static str {
        "shuku-head-projection"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (n, k) = l1.shape().dims2()?;
        let (out, _) = l2.shape().dims2()?;
        let y = new_product((n, out, k), (x, (k, 1)), (w, (1, k)));
        let y = self.rotated(&y, false)?.unwrap_or(y);
        Ok((CpuStorage::F32(y), Shape::from(self.dims)))
    }

    /// The gradient rotated back, then `dx = g · W`, `dW = gᵀ · x`.
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let (out, _) = weight.dims2()?;
        let (dx, dw) = with_f32s([x, weight, grad], self.name(), |[x, w, g]| {
            if g.len() != n * out {
                candle_core::bail!("{}: the gradient is not [{n}, {out}]", self.name());
            }
            let back = self.rotated(g, true)?;
            let g = back.as_deref().unwrap_or(g);
            Ok(product_gradients((x, w, g), (n, k, out)))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.dims())?),
            Some(cpu_tensor(dw, weight.dims())?),
        ))
    }
}
