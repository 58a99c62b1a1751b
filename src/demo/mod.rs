//! The end-to-end demo's independent parts: a procedural long-tailed image dataset
//! ([`shapes`]), a small probe classifier that labels samples and defines a feature space
//! ([`probe`]), and the report — class proportions, total variation to uniform, Fréchet
//! distances, paired differences, sample grids and a bar chart ([`report`]).

pub mod probe;
pub mod report;
pub mod run;
pub mod shapes;
