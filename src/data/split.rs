//! `tiw dataset split`: a biased training set and a disjoint, class-balanced reference set
//! from a labelled `dataset_tool` zip (the paper's D_bias and D_ref, SPEC §5.4).
//!
//! **Counts.** With `N_c` images of class `c` (`C` classes = largest label + 1) and ratios
//! `r_c` (normalised so that the largest is 1):
//! * `--long-tail F`: `r_c = (1/F)^(c/(C−1))` (CIFAR-10-LT's exponential profile; class 0 is
//!   the head), `--class-ratios a,b,…`: `r_c = v_c / max v`, neither: `r_c = 1`;
//! * biased set: `n_c = floor(n_max · r_c + 1e-9)` (the `int(n_max · r_c)` of CIFAR-10-LT,
//!   robust to representation error when the product is an integer);
//! * reference set: `M = round(f · Σ n_c)` (`f` = `--reference-fraction`, the paper's "5 %" =
//!   |D_ref| / |D_bias|; halves away from zero), balanced: `m_c = ⌊M / C⌋ + [c < M mod C]`;
//! * `n_max` = `--max-per-class`, or by default the largest value with `n_c + m_c ≤ N_c` for
//!   every class. A split that does not fit is an error naming the class; nothing is written.
//!
//! **Choice.** ChaCha8 seeded with `--seed` shuffles each class's images (source order, class
//! by class, `rand` 0.8's Fisher–Yates); the first `m_c` are reference, the next `n_c` biased.
//!
//! **Output** (in a staging folder renamed to OUTDIR at the end; OUTDIR must be absent or
//! empty): `score_training/dataset.zip` (D_bias ∪ D_ref in source order, PNG bytes copied,
//! labels kept — what `tiw train --data` reads), `discriminator_training/bias/fake_data.npz`
//! and `discriminator_training/reference/real_data.npz` (`samples` uint8 N×H×W×C plus
//! `labels` int64 — what `tiw train-classifier --bias/--ref` read), and `split.json` (counts
//! per class, options, seed, source SHA-256, the chosen source indices). Zip members have fixed
//! timestamps: the same source, options and seed give byte-identical files.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::images::{decode, has_image_ext, zip_image_names, MAX_IMAGE_BYTES};
use super::writer::{labels_json, member_name, DatasetZipWriter, SamplesNpzWriter};

/// How the biased set's class profile is given.
#[derive(Debug, Clone, PartialEq)]
pub enum Ratios {
    /// Every class at `n_max`.
    Uniform,
    /// `r_c = (1/F)^(c/(C−1))`.
    LongTail(f64),
    /// Per-class values (normalised by their maximum).
    Explicit(Vec<f64>),
}

/// Options of [`split`].
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// |D_ref| / |D_bias|.
    pub reference_fraction: f64,
    /// Class profile of the biased set.
    pub ratios: Ratios,
    /// Biased images of the head class (default: the largest that fits).
    pub max_per_class: Option<usize>,
    /// Seed of the per-class shuffles.
    pub seed: u64,
}

/// Per-class counts of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    /// Images per class in the source.
    pub available: Vec<usize>,
    /// Normalised ratios `r_c`.
    pub ratios: Vec<f64>,
    /// `n_max`.
    pub max_per_class: usize,
    /// Biased images per class.
    pub bias: Vec<usize>,
    /// Reference images per class.
    pub reference: Vec<usize>,
}

fn ratios_for(r: &Ratios, classes: usize) -> Result<Vec<f64>> {
    let v = match r {
        Ratios::Uniform => vec![1.0; classes],
        Ratios::LongTail(f) => {
            if !(f.is_finite() && *f >= 1.0) {
                bail!("--long-tail {f}: the factor must be ≥ 1 (n_max / n_min)");
            }
            let inv = 1.0 / f;
            (0..classes)
                .map(|c| {
                    if classes == 1 {
                        1.0
                    } else {
                        inv.powf(c as f64 / (classes - 1) as f64)
                    }
                })
                .collect()
        }
        Ratios::Explicit(v) => {
            if v.len() != classes {
                bail!(
                    "--class-ratios gives {} values but the dataset has {classes} classes",
                    v.len()
                );
            }
            if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                bail!("--class-ratios: values must be finite and ≥ 0");
            }
            let max = v.iter().cloned().fold(0.0, f64::max);
            if max <= 0.0 {
                bail!("--class-ratios: at least one value must be positive");
            }
            v.iter().map(|x| x / max).collect()
        }
    };
    Ok(v)
}

fn counts(n_max: usize, ratios: &[f64], fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let bias: Vec<usize> = ratios
        .iter()
        .map(|r| (n_max as f64 * r + 1e-9).floor() as usize)
        .collect();
    let total: usize = bias.iter().sum();
    let m = (fraction * total as f64).round() as usize;
    let c = ratios.len();
    let reference = (0..c).map(|k| m / c + usize::from(k < m % c)).collect();
    (bias, reference)
}

fn fits(available: &[usize], bias: &[usize], reference: &[usize]) -> Option<usize> {
    (0..available.len()).find(|&c| bias[c] + reference[c] > available[c])
}

/// The per-class counts for `available` images per class (see the module docs).
pub fn plan(available: &[usize], opts: &SplitOptions) -> Result<SplitPlan> {
    let f = opts.reference_fraction;
    if !(f.is_finite() && f >= 0.0) {
        bail!("--reference-fraction {f}: must be ≥ 0");
    }
    if available.is_empty() {
        bail!("the dataset has no classes");
    }
    let ratios = ratios_for(&opts.ratios, available.len())?;
    let n_max = match opts.max_per_class {
        Some(n) => n,
        None => {
            // feasibility is monotone in n_max: binary search for the largest feasible value
            let (mut lo, mut hi) = (0usize, *available.iter().max().unwrap_or(&0));
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                let (b, r) = counts(mid, &ratios, f);
                if fits(available, &b, &r).is_none() {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            if lo == 0 {
                let (b, r) = counts(1, &ratios, f);
                let c = fits(available, &b, &r).unwrap_or(0);
                bail!(
                    "no split fits: even one biased image of the head class needs {} reference image(s) of class {c}, which has {}",
                    r[c],
                    available[c]
                );
            }
            lo
        }
    };
    let (bias, reference) = counts(n_max, &ratios, f);
    if let Some(c) = fits(available, &bias, &reference) {
        bail!(
            "class {c} has {} images but the split needs {} biased + {} reference; lower --max-per-class or --reference-fraction",
            available[c],
            bias[c],
            reference[c]
        );
    }
    if bias.iter().sum::<usize>() == 0 {
        bail!("the biased set would be empty (--max-per-class {n_max})");
    }
    Ok(SplitPlan {
        available: available.to_vec(),
        ratios,
        max_per_class: n_max,
        bias,
        reference,
    })
}

/// What [`split`] wrote.
#[derive(Debug, Clone)]
pub struct SplitSummary {
    /// The counts.
    pub plan: SplitPlan,
    /// `(width, height, channels)`.
    pub shape: (usize, usize, usize),
}

/// The sorted image members and their labels of a labelled dataset zip.
fn read_labelled(
    z: &mut zip::ZipArchive<BufReader<std::fs::File>>,
    path: &Path,
) -> Result<(Vec<String>, Vec<usize>)> {
    let files = zip_image_names(z, path, has_image_ext)?;
    let mut text = Vec::new();
    z.by_name("dataset.json")
        .map_err(|_| anyhow!("{}: no dataset.json; split needs class labels", path.display()))?
        .take(1 << 28)
        .read_to_end(&mut text)?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{}: dataset.json is not valid JSON", path.display()))?;
    let items = v.get("labels").and_then(|l| l.as_array()).ok_or_else(|| {
        anyhow!(
            "{}: dataset.json has no labels (null); split needs class labels — convert a labelled source",
            path.display()
        )
    })?;
    let mut map = std::collections::HashMap::new();
    for it in items {
        if let Some([n, l]) = it.as_array().map(Vec::as_slice) {
            if let (Some(n), Some(l)) = (n.as_str(), l.as_u64()) {
                map.insert(n.to_string(), l as usize);
                continue;
            }
        }
        bail!(
            "{}: dataset.json entry {it} is not [name, class index]",
            path.display()
        );
    }
    let labels = files
        .iter()
        .map(|f| {
            map.get(f)
                .copied()
                .ok_or_else(|| anyhow!("{}: {f} has no label in dataset.json", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    if labels.iter().any(|&l| l >= 1 << 20) {
        bail!("{}: class indices must be below 2^20", path.display());
    }
    Ok((files, labels))
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Splits the labelled dataset zip `source` into OUTDIR (see the module docs);
/// `progress(done, total)` follows the images written.
pub fn split(
    source: &Path,
    outdir: &Path,
    opts: &SplitOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SplitSummary> {
    let f = std::fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let mut z = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{}: not a valid zip archive", source.display()))?;
    let (files, labels) = read_labelled(&mut z, source)?;
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let available: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let plan = plan(&available, opts)?;
    if outdir.exists()
        && std::fs::read_dir(outdir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{}: the output folder exists and is not empty", outdir.display());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let (mut bias, mut reference) = (Vec::new(), Vec::new());
    for (c, idx) in by_class.iter_mut().enumerate() {
        idx.shuffle(&mut rng);
        reference.extend_from_slice(&idx[..plan.reference[c]]);
        bias.extend_from_slice(&idx[plan.reference[c]..plan.reference[c] + plan.bias[c]]);
    }
    bias.sort_unstable();
    reference.sort_unstable();
    let parent = match outdir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(".tiw-split-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let sets = Sets {
        files: &files,
        labels: &labels,
        bias: &bias,
        reference: &reference,
    };
    let shape = write_outputs(&mut z, source, stage.path(), &sets, progress)?;
    let json = split_json(source, opts, &plan, &sets, shape)?;
    std::fs::write(stage.path().join("split.json"), json)?;
    if outdir.exists() {
        std::fs::remove_dir(outdir).with_context(|| format!("cannot replace {}", outdir.display()))?;
    }
    let staged = stage.keep();
    std::fs::rename(&staged, outdir).with_context(|| format!("cannot create {}", outdir.display()))?;
    Ok(SplitSummary { plan, shape })
}

struct Sets<'a> {
    files: &'a [String],
    labels: &'a [usize],
    bias: &'a [usize],
    reference: &'a [usize],
}

fn read_png(z: &mut zip::ZipArchive<BufReader<std::fs::File>>, name: &str, source: &Path) -> Result<Vec<u8>> {
    let mut m = z
        .by_name(name)
        .with_context(|| format!("{}: {name}", source.display()))?;
    let mut b = Vec::new();
    (&mut m)
        .take(MAX_IMAGE_BYTES as u64)
        .read_to_end(&mut b)
        .with_context(|| format!("{}: {name}: corrupt member", source.display()))?;
    Ok(b)
}

fn write_outputs(
    z: &mut zip::ZipArchive<BufReader<std::fs::File>>,
    source: &Path,
    stage: &Path,
    s: &Sets,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(usize, usize, usize)> {
    let mut observed: Vec<usize> = s.bias.iter().chain(s.reference).copied().collect();
    observed.sort_unstable();
    let first = decode(&read_png(z, &s.files[observed[0]], source)?)
        .with_context(|| format!("{}: {}", source.display(), s.files[observed[0]]))?;
    let (w, h, c) = (first.width, first.height, first.channels);
    for d in [
        "score_training",
        "discriminator_training/bias",
        "discriminator_training/reference",
    ] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let mut zip = DatasetZipWriter::create(&stage.join("score_training/dataset.zip"))?;
    let mut bias_npz = SamplesNpzWriter::create(
        &stage.join("discriminator_training/bias/fake_data.npz"),
        s.bias.len(),
        h,
        w,
        c,
        true,
    )?;
    let mut ref_npz = SamplesNpzWriter::create(
        &stage.join("discriminator_training/reference/real_data.npz"),
        s.reference.len(),
        h,
        w,
        c,
        true,
    )?;
    let (mut bi, mut ri) = (0, 0);
    let mut names = Vec::with_capacity(observed.len());
    for (j, &i) in observed.iter().enumerate() {
        let png = read_png(z, &s.files[i], source)?;
        let what = || format!("{}: {}", source.display(), s.files[i]);
        let img = decode(&png).with_context(what)?;
        if (img.width, img.height, img.channels) != (w, h, c) {
            bail!(
                "{}: image is {}×{}×{} but the first is {w}×{h}×{c}",
                what(),
                img.width,
                img.height,
                img.channels
            );
        }
        let name = member_name(j);
        zip.add(&name, &png)?;
        names.push(name);
        let label = s.labels[i] as i64;
        if s.bias.get(bi) == Some(&i) {
            bias_npz.push(&img.data, label)?;
            bi += 1;
        } else {
            ref_npz.push(&img.data, label)?;
            ri += 1;
        }
        if j % 256 == 255 || j + 1 == observed.len() {
            progress(j + 1, observed.len());
        }
    }
    debug_assert_eq!((bi, ri), (s.bias.len(), s.reference.len()));
    let labels = observed.iter().map(|&i| s.labels[i] as i64);
    zip.finish(&labels_json(Some(names.iter().map(String::as_str).zip(labels))))?;
    bias_npz.finish()?;
    ref_npz.finish()?;
    Ok((w, h, c))
}

fn split_json(
    source: &Path,
    opts: &SplitOptions,
    plan: &SplitPlan,
    s: &Sets,
    shape: (usize, usize, usize),
) -> Result<String> {
    let (mode, factor) = match &opts.ratios {
        Ratios::Uniform => ("uniform", None),
        Ratios::LongTail(f) => ("long-tail", Some(*f)),
        Ratios::Explicit(_) => ("class-ratios", None),
    };
    let v = serde_json::json!({
        "source": source.file_name().map(|n| n.to_string_lossy().into_owned()),
        "source_sha256": sha256_file(source)?,
        "seed": opts.seed,
        "reference_fraction": opts.reference_fraction,
        "mode": mode,
        "long_tail_factor": factor,
        "ratios": plan.ratios,
        "max_per_class": plan.max_per_class,
        "classes": plan.available.len(),
        "resolution": [shape.0, shape.1],
        "channels": shape.2,
        "available_per_class": plan.available,
        "bias_per_class": plan.bias,
        "reference_per_class": plan.reference,
        "totals": {
            "bias": s.bias.len(),
            "reference": s.reference.len(),
            "observed": s.bias.len() + s.reference.len(),
        },
        "rounding": "n_c = floor(n_max * r_c + 1e-9); M = round(f * sum n_c); m_c = M div C + (c < M mod C)",
        "files": {
            "score_training": "score_training/dataset.zip",
            "bias": "discriminator_training/bias/fake_data.npz",
            "reference": "discriminator_training/reference/real_data.npz",
        },
        "bias_source_members": s.bias.iter().map(|&i| &s.files[i]).collect::<Vec<_>>(),
        "reference_source_members": s.reference.iter().map(|&i| &s.files[i]).collect::<Vec<_>>(),
    });
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}
