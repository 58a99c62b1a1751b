//! Training from files: opens the dataset, the sampler and the augment pipe the options
//! describe and runs [`super::score::train`].

use anyhow::{Context, Result};
use tch::Device;

use super::augment::AugmentPipe;
use super::feed::{FolderData, SamplerStream};
use super::loss::Augment;
use super::options::TrainOptions;
use super::parallel::{Collective, Solo};
use super::score::{train_on, IndexStream, RunSummary};
use crate::data::image_folder::{DatasetOptions, ImageDataset};

/// Opens `opts.data` (labels when `--cond`, x-flips when `--xflip`), decodes every image
/// once up front (so a corrupt file fails before training starts), and trains.
pub fn train_from_files(
    opts: &TrainOptions,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    train_from_files_on(opts, device, &Solo, log)
}

/// [`train_from_files`] as one rank of `comm` (its share of the sampler's stream).
pub fn train_from_files_on(
    opts: &TrainOptions,
    device: Device,
    comm: &dyn Collective,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    opts.validate()?;
    let ds = ImageDataset::open(
        &opts.data,
        DatasetOptions {
            use_labels: opts.cond,
            xflip: opts.xflip,
            ..Default::default()
        },
    )
    .with_context(|| format!("opening the dataset {}", opts.data.display()))?;
    ds.preload()?;
    let n = ds.len();
    let data = FolderData(ds);
    let pipe = (opts.augment > 0.0).then(|| AugmentPipe::edm(opts.augment));
    let mut make = |seed: u64, pos: u64| -> Result<Box<dyn IndexStream>> {
        Ok(Box::new(SamplerStream::for_rank(
            n,
            seed,
            pos,
            comm.rank(),
            comm.world_size(),
            opts.batch,
            opts.sampler_split,
        )?))
    };
    train_on(
        opts,
        &data,
        &mut make,
        pipe.as_ref().map(|p| p as &dyn Augment),
        device,
        comm,
        log,
    )
}
