//! Errors of the format readers and writers.
//!
//! Every error is one line that names what was being read and what went wrong; the
//! top-level loaders wrap it with the file name ([`Error::InFile`]).

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {error}", path.display())]
    Io {
        /// File that could not be read or written.
        path: PathBuf,
        /// The underlying error (displayed inline, not chained, so it is printed once).
        error: std::io::Error,
    },
    /// A malformed pickle stream (offset relative to the start of `stream`).
    #[error("{stream}: pickle error at byte {offset}: {msg}")]
    Pickle {
        /// Name of the pickle stream (e.g. `archive/data.pkl`).
        stream: String,
        /// Byte offset of the offending opcode inside that stream.
        offset: usize,
        /// What is wrong.
        msg: String,
    },
    /// A structural problem of a container format (zip, legacy torch.save, safetensors, ...).
    #[error("{0}")]
    Format(String),
    /// The file is well formed but uses something this reader does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The file asks for something we refuse to do (e.g. calling `os.system`).
    #[error("refused: {0}")]
    Refused(String),
    /// An error annotated with the file it came from.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file being processed.
        path: PathBuf,
        /// The error (displayed inline, not chained, so it is printed once).
        error: Box<Error>,
    },
}

impl Error {
    /// Shorthand for [`Error::Format`].
    pub fn format(msg: impl Into<String>) -> Self {
        Error::Format(msg.into())
    }

    /// Attach a file name unless one is already attached.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ (Error::InFile { .. } | Error::Io { .. }) => e,
            e => Error::InFile {
                path: path.into(),
                error: Box::new(e),
            },
        }
    }
}

/// Builds an [`Error::Format`] from format arguments.
#[macro_export]
#[doc(hidden)]
macro_rules! format_err {
    ($($arg:tt)*) => { $crate::Error::Format(format!($($arg)*)) };
}
