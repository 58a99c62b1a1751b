//! Training data (SPEC §5.1, §5.4): EDM's `ImageFolderDataset` ([`image_folder`]), the
//! discriminator's `samples` npz ([`samples_npz`]), writers of both formats ([`writer`]) and
//! EDM's `InfiniteSampler` with numpy-identical index streams ([`sampler`]), over the image
//! I/O shared with FID: directory/zip/npz image sets with bounded decoding ([`images`]) and
//! NumPy's legacy `RandomState` ([`random`]). `tiw dataset`: [`dataset_tool`] (EDM's
//! `dataset_tool.py convert`, with PIL's Lanczos [`resample`] and the [`cifar`] tarball
//! reader) and [`split`] (a biased set and a balanced reference set from a labelled zip).

pub mod cifar;
pub mod dataset_tool;
pub mod image_folder;
pub mod images;
pub mod random;
pub mod resample;
pub mod sampler;
pub mod samples_npz;
pub mod split;
pub mod writer;

pub use image_folder::{DatasetOptions, ImageDataset};
pub use sampler::{InfiniteSampler, SamplerState};
pub use samples_npz::SamplesDataset;
pub use writer::{write_dataset_zip, write_samples_npz};
