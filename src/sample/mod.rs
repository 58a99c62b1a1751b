//! Sampling: the EDM and ablation samplers, per-seed noise, seeds and sharding, and the
//! runtimes' denoisers.

pub mod denoiser;
pub mod noise;
pub mod sampler;
pub mod seeds;
