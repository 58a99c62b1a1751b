//! Training (libtorch): losses with pinnable random draws. The loops, optimiser, EMA,
//! augmentation and checkpoints are the next step.

pub mod classifier;
pub mod loss;
pub mod step;
