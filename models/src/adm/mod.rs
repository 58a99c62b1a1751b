//! The ADM pieces of TIW-DSM / discriminator guidance (SPEC §2.5–2.6).

pub mod encoder;

pub use encoder::{EncoderConfig, EncoderUNet};
