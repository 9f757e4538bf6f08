//! f32 primitives that shuku's training kernels (`shuku-model`'s fused operations) and its inference
//! engine (`shuku-infer`'s attention) share, so both compute a softmax with one definition of
//! `exp`.
//!
//! Written by hand: what these few lines do (an `exp` that inlines into a loop and vectorises with
//! it, sums in fixed lanes) is not what the maths crates offer, whose `exp` is a call per value.

mod exp;

pub use exp::{exp, lane_max, lane_sum};
