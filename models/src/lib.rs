//! `tiw-models`: EDM and TIW-DSM networks defined once over [`backend::Ops`].
//!
//! * [`edm`] — SongUNet (DDPM++/NCSN++), DhariwalUNet (ADM), EDM/VP/VE/iDDPM preconditioning.
//! * [`adm`] — the ADM `EncoderUNetModel` feature extractor and the time-dependent
//!   discriminator of TIW-DSM / discriminator guidance.
//! * [`vpsde`], `guidance` — the VP SDE helpers and the guidance terms (autograd, tch).
//! * `tch_ops` — eager libtorch backend; [`vb`] — parameter access by name.
//!
//! Cargo feature `tch` (default): the libtorch backend, the guidance terms and the official
//! initialisers. Without it (`--no-default-features`) the crate needs no libtorch.

pub mod adm;
pub mod backend;
pub mod config;
pub mod edm;
mod error;
pub mod export;
#[cfg(feature = "tch")]
pub mod guidance;
pub mod inception;
pub mod load;
pub mod onnx_model;
pub mod onnx_ops;
#[cfg(feature = "tch")]
pub mod tch_ops;
pub mod vb;
pub mod vpsde;

pub use error::{ModelError, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("tiw-models reads and writes tensors as little-endian bytes in place");
