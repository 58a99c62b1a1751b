//! Evaluation of sample sets beyond the FID family ([`crate::fid::metrics`]): class
//! proportions of a sample set under an image classifier and their distance to a target
//! distribution ([`proportions`]), with the classifier run through the ONNX runtimes
//! ([`classifier`]) or, for a TorchScript file, libtorch ([`torchscript`]).

pub mod classifier;
pub mod proportions;
pub mod torchscript;
