//! `tiw`: the workflows on top of `tiw-converters` and `tiw-models` — device selection,
//! ONNX export and runtimes (ONNX Runtime, tract), `.npz` I/O. The `tiw` binary's commands
//! are thin layers over these modules.

pub mod data;
pub mod demo;
pub mod device;
pub mod dist;
pub mod eval;
pub mod fid;
pub mod forward;
pub mod malloc_tuning;
pub mod npz;
pub mod onnx_export;
pub mod parity;
pub mod precision;
pub mod runtime;
pub mod sample;
pub mod train;
pub mod verify;
