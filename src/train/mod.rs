//! Training (libtorch): losses with pinnable random draws, the geometric augment pipe, the
//! optimiser step, the score-model training loop with its snapshots and training states.

pub mod augment;
pub mod checkpoint;
pub mod classifier;
pub mod draws;
pub mod feed;
pub mod init;
pub mod loss;
pub mod memory;
pub mod options;
pub mod parallel;
pub mod preempt;
pub mod run;
pub mod score;
pub mod setup;
pub mod stats;
pub mod step;
