//! Errors of model construction and evaluation.

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A parameter the architecture needs is not in the weights.
    #[error("missing parameter {0:?} in the weights")]
    MissingParam(String),
    /// A parameter has the wrong shape.
    #[error("parameter {name:?} has shape {got:?}, the configuration implies {want:?}")]
    ParamShape {
        /// Parameter name.
        name: String,
        /// Shape in the weights.
        got: Vec<usize>,
        /// Shape implied by the configuration.
        want: Vec<usize>,
    },
    /// The weights hold names the architecture does not use.
    #[error("{count} unused tensor(s) in the weights, e.g. {example:?}")]
    UnusedParams {
        /// How many.
        count: usize,
        /// One of them.
        example: String,
    },
    /// The configuration is invalid or unsupported.
    #[error("configuration: {0}")]
    Config(String),
    /// Inputs of the wrong shape or type.
    #[error("input: {0}")]
    Input(String),
    /// An error from libtorch.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Tch(#[from] tch::TchError),
    /// Writing an exported model failed.
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
    /// An error from reading the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] tiw_converters::Error),
}
