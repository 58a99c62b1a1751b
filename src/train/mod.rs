//! Training (libtorch): losses with pinnable random draws, the geometric AugmentPipe. The
//! loops, optimiser, EMA and checkpoints are the next step.

pub mod augment;
pub mod loss;
pub mod step;
