//! Numeric primitives that shuku's crates share: the f32 `exp` and lane-wise reductions of the
//! training kernels (`shuku-model`'s fused operations) and the inference engine (`shuku-infer`'s
//! attention), so both compute a softmax with one definition of `exp`; and the [`SplitMix64`]
//! generator behind training's batch order, the test models' weights and the sampler's seeding.
//!
//! Written by hand: what these few lines do (an `exp` that inlines into a loop and vectorises with
//! it, sums in fixed lanes) is not what the maths crates offer, whose `exp` is a call per value.

mod exp;
mod rng;

pub use exp::{exp, lane_max, lane_sum};
pub use rng::SplitMix64;
