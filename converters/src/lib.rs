//! `tiw-converters`: safe readers and writers for PyTorch / EDM / TIW-DSM checkpoints.
//!
//! * [`pickle`] — a data-only pickle VM (protocols 0–5) with an allow-list of interpreted
//!   globals; nothing from a file is ever imported or executed.
//! * [`torch_zip`], [`torch_legacy`] — both `torch.save` formats.
//! * [`edm_pkl`] — EDM persistence objects → state_dict names + constructor kwargs.
//! * [`checkpoint`] — open any supported file, recognise what it holds, extract tensors.
//! * [`store`] — [`TensorStore`]: named tensors as views into the memory-mapped file.
//! * [`safetensors_io`], [`pt_write`] — writers (safetensors with JSON config metadata;
//!   torch.save zip state_dicts loadable with `torch.load(weights_only=True)`).
//! * [`convert`] — file-to-file conversion; [`inspect`] — a structured report of a file.
//!
//! No tensor library is used: tensors are (dtype, shape, bytes).

pub mod checkpoint;
pub mod convert;
pub mod dtype;
pub mod edm_pkl;
mod error;
pub mod inspect;
pub mod pickle;
pub mod pt_write;
pub mod pyjson;
pub mod safetensors_io;
pub mod store;
pub mod torch_legacy;
pub mod torch_zip;

pub use checkpoint::{open, Checkpoint, Extracted, Format, Kind, Selection, What};
pub use dtype::DType;
pub use error::{Error, Result};
pub use pyjson::Json;
pub use store::{Buffer, TensorEntry, TensorStore};
