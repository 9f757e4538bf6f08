//! The crate's random numbers: [`SplitMix64`] (defined in `shuku-math`, shared with the other
//! crates), whose whole state is one `u64` a checkpoint stores, so training resumes bit-for-bit.

pub use shuku_math::SplitMix64;
