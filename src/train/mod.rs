//! Training (libtorch): losses with pinnable random draws, the optimiser step, the
//! score-model training loop with its snapshots and training states.

pub mod checkpoint;
pub mod init;
pub mod loss;
pub mod options;
pub mod score;
pub mod stats;
pub mod step;
