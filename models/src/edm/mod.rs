//! The EDM family: layers, SongUNet, DhariwalUNet and the preconditioning wrappers.

pub mod dhariwal_unet;
pub mod layers;
pub mod precond;
pub mod song_unet;
mod unet;

pub use precond::{DenoiserOut, EdmDenoiser};
