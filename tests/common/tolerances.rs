//! Every parity tolerance of the test suite, in one table. Each entry says what it bounds,
//! why the value, and the worst error measured when it was last reviewed; docs/PARITY.md is
//! generated from this file (`TIW_BLESS=1 cargo test --test docs`, checked by the same test).
//!
//! Unless an entry says otherwise a tolerance bounds `tiw::parity::norm_err`,
//! max |ours − reference| / max |reference|. "abs" entries bound max |ours − reference|,
//! "rel" entries |ours − reference| / |reference| of a scalar.

/// One tolerance: its constant's name and value, the doc text (what it bounds and why) and
/// the worst error measured.
pub struct Tolerance {
    pub name: &'static str,
    pub value: f64,
    pub doc: &'static str,
    pub worst: &'static str,
}

macro_rules! tolerances {
    ($($(#[doc = $doc:literal])+ $name:ident = $value:literal, worst $worst:literal;)*) => {
        $($(#[doc = $doc])+ pub const $name: f64 = $value;)*

        /// The table, in declaration order.
        pub const TABLE: &[Tolerance] = &[
            $(Tolerance {
                name: stringify!($name),
                value: $value,
                doc: concat!($($doc, "\n"),+),
                worst: $worst,
            },)*
        ];
    };
}

tolerances! {
    /// Forward of the 6 fixture networks (DDPM++, NCSN++, ADM; EDM/VP/VE preconditioning;
    /// conditional): `D`, `F_x`, `model_in`, `noise_labels`, `D_labels_none`, `D_augment`,
    /// `D_scalar_sigma` vs the official f32 CPU outputs. Both sides are f32 with different
    /// reduction orders (~1e-6); 1e-5 leaves a 7× margin.
    TOL_NET_FORWARD = 1e-5, worst "1.4e-6";
    /// ADM feature extractor, discriminator, conditional discriminator (int and one-hot labels),
    /// `d(x,t)`, log ratio and the autograd guidance terms (`grad_log_ratio`, weight correction,
    /// prediction at res 32 / 64 / 3, out-of-range branch, conditional), also through the CLI.
    /// The guidance gradients are ill-conditioned (sigmoid and log of the discriminator,
    /// backpropagated through the encoder), so they move by ~1e-5 where the forward moves by 1e-6.
    TOL_CLASSIFIER = 2e-5, worst "1.7e-6 forward; 1.1e-5 guidance";
    /// Preconditioning coefficients (c_skip, c_out, c_in, c_noise) of EDM/VP/VE: a few f32
    /// operations, so 1e-6 is a few ulps of headroom.
    TOL_PRECOND = 1e-6, worst "4.4e-7";
    /// VP SDE (β schedule, σ ↔ t, importance-sampled t, reverse τ) in f32 vs the official f32
    /// evaluation: a few ulps.
    TOL_VPSDE_F32 = 1e-6, worst "4.4e-7";
    /// The same VP SDE functions in f64: formulas restated exactly give round-off only.
    TOL_VPSDE_F64 = 1e-12, worst "1.1e-15";
    /// tch's fused attention (libtorch SDPA: inference and frozen guidance networks) vs the
    /// official matmul/softmax composition, values and gradients for 1–6 heads: another
    /// summation order of the same f32 products.
    TOL_FUSED_ATTENTION = 1e-5, worst "7.6e-7";
    /// Channels-last training convolutions vs NCHW: values and gradients w.r.t. input, weight
    /// and bias; other f32 kernels, same arithmetic.
    TOL_CHANNELS_LAST = 1e-5, worst "7.3e-7";
    /// ONNX graphs (6 nets, extractor, 2 discriminators, pipeline) on ONNX Runtime and tract at
    /// batch 1 and 7 vs the official outputs: the fixture README's bound for another runtime's
    /// kernels (ort and tract pick their own convolution algorithms).
    TOL_VS_FIXTURE = 1e-4, worst "1.1e-6";
    /// The same graphs vs tch on the same inputs (both ours, same f32 definition).
    TOL_VS_TCH = 1e-5, worst "—";
    /// EDM sampler with recorded latents and noise (deterministic and churn), 6 nets ×
    /// tch/ort/tract, final images: 18 Heun steps accumulate the network's f32 error in the f64
    /// state.
    TOL_SAMPLER_OUT = 1e-5, worst "7.7e-6";
    /// The sampler's σ schedule and the σ of every network call, in f64: exact formulas.
    TOL_SAMPLER_SIGMA = 1e-12, worst "exact";
    /// EDM/VP/VE/TIW losses with recorded draws, including TIW's (N,1,1,N,C,H,W) broadcast:
    /// one network forward plus elementwise f32 arithmetic.
    TOL_LOSS = 1e-5, worst "5e-6";
    /// One full TIW training step (gradients of every parameter, Adam update, EMA): the
    /// fixture README's bound for backward passes, whose reductions reorder more than forwards.
    TOL_TRAIN_STEP = 1e-4, worst "4.2e-6";
    /// The f16 path of a `use_fp16` network on tch (forced on the CPU) vs the official f32
    /// outputs (D, normalised): f16 keeps 11 significant bits (4.9e-4 relative rounding per
    /// operation); tens of layers of it land at ~1e-3 on the fixture nets.
    TOL_FP16_TCH_VS_F32 = 1e-2, worst "1.2e-3";
    /// `tiw export --precision fp16` graphs on tract and ort CPU vs the official f32 outputs
    /// (D, normalised): the same f16 rounding through the network, a few 1e-3.
    TOL_FP16_ONNX_VS_FIXTURE = 1e-2, worst "6.3e-3 (tract, ADM)";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: teacher-forced guidance term per step (normalised per step): one discriminator gradient
    /// in f32 from identical inputs; the official run itself moves by ~1e-5 between thread counts.
    TOL_DG_GUIDANCE = 1e-4, worst "5.7e-5";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: teacher-forced log ratio, absolute, on the guided steps (the 1e7 out-of-range value would
    /// hide everything in a normalised figure).
    TOL_DG_LOG_RATIO_ABS = 1e-4, worst "8.2e-5";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: one teacher-forced sampler step x̂_i → x̂_{i+1} (normalised): two f32 network calls and
    /// one guidance term added in f64.
    TOL_DG_STEP = 1e-4, worst "6.3e-6";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: end to end, guided variants (`default`, `boost`, `window`): ~10× the official code's own
    /// spread between 1 and 2 threads (≤ 3.7e-4): the random discriminators amplify f32
    /// rounding by ~10× per guided step.
    TOL_DG_OUT = 5e-3, worst "3.0e-4 (tract)";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: end to end, `second` (1st + 2nd order): the official 1-thread spread is up to 3.8e-3.
    TOL_DG_OUT_SECOND = 5e-2, worst "1.4e-2 (tract, NCSN++)";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: end to end, `w0` (no guidance): only the f32 network calls differ (bit-identical across
    /// thread counts in the official run).
    TOL_DG_OUT_W0 = 1e-4, worst "1.4e-6";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: the σ of each Euler step, relative (f64 arithmetic of the same formula).
    TOL_DG_T_HAT_REL = 1e-14, worst "—";
    /// DG (EDM-G++) sampler vs `nets/*/dg_sampler.npz`: `dg_sample` at weight 0 against the plain EDM sampler on the same runtime: they differ
    /// only in the Euler-step σ being per sample (a (B,) σ, as in DG) instead of one scalar —
    /// the network's f32 noise embedding may round differently (fixture quirk 5: ≤ 5e-6 abs).
    TOL_DG_W0_VS_EDM = 1e-5, worst "9.1e-7";
    /// Data parallel: every weight, EMA and Adam moment (and train-classifier's weights) of
    /// a 2-rank run vs a 1-process run with the same global batch and `--batch-gpu` = the
    /// per-rank batch (same samples per network call; only the gradient sum's order may
    /// differ). 1e-4 as the train-step bound; on the CPU the runs are bit-identical.
    TOL_WORLD = 1e-4, worst "0 (bit-identical)";
    /// FID statistics (n, Σf, Σffᵀ in f64) summed over 2 ranks vs one pass: f64 summation
    /// order only.
    TOL_FID_WORLD_REL = 1e-9, worst "2.9e-21";
    /// Discriminator training step (`disc_train_step.npz`): perturbed inputs, features,
    /// predictions, BCE before/after, 71 gradients and the updated weights vs
    /// `discriminator_1.pt`; the fixture README's 1e-4 for training steps.
    TOL_DISC_STEP = 1e-4, worst "1.3e-5 (grad:input_blocks.2.1.qkv.weight)";
    /// AugmentPipe with pinned draws (identity, pure x/y-flips, integer translation): the f32
    /// coordinate matrices do not multiply back to exactly I, so resampling moves values by
    /// ~2e-6.
    TOL_AUGMENT = 5e-6, worst "2.2e-6";
    /// FID of `fid_cases.npz` (identical, rank-deficient, ...) and vs `ref_stats_d64.npz`,
    /// rel: our f64 eigen route vs scipy's sqrtm route, both f64.
    TOL_FID_REL = 1e-6, worst "2.5e-9";
    /// abs bound used instead of [`TOL_FID_REL`] where the reference FID is ~0 (identical sets).
    TOL_FID_ABS_NEAR_0 = 1e-9, worst "—";
    /// Inception-v3's TF1 bilinear resize to 299×299, abs (uint8-scaled inputs): the fixture's
    /// `fid/inception/` README bound.
    TOL_RESIZE_ABS = 1e-6, worst "bit-exact";
    /// Inception-v3 2048-d features on tch and ort: abs part of `abs + rel·|ref|` (fid/inception
    /// README), for ~100 f32 convolution layers.
    TOL_FEAT_ABS = 3e-5, worst "3.8e-6 abs";
    /// rel part of the feature bound (see [`TOL_FEAT_ABS`]).
    TOL_FEAT_REL = 1e-4, worst "—";
    /// Feature mean μ, abs (fid/inception README).
    TOL_MU_ABS = 1e-5, worst "1.4e-6";
    /// Feature covariance Σ (diagonal and a 64×64 block), abs (fid/inception README).
    TOL_SIGMA_ABS = 2e-5, worst "1.9e-6";
    /// FID between the Inception statistics of two image sets, rel (fid/inception README).
    TOL_INCEPTION_FID_REL = 1e-6, worst "—";
    /// abs floor of the Inception FID bound (fid/inception README).
    TOL_INCEPTION_FID_ABS = 1e-4, worst "—";
    /// EDM's `fid_0_3_vs_4_7` (scipy `sqrtm`) and the fixture's numpy-eigh value are biased in
    /// that rank-3 case by their own rounding: 2.4e-6 and 2.0e-6 relative above the exact
    /// low-rank value (nuclear norm of the 4×4 cross-covariance), which ours matches to ~2e-8.
    TOL_FID_VS_BIASED_SQRTM_REL = 5e-6, worst "2.4e-6";
    /// Merged partial statistics vs one pass over the same features, and KID/PR of the same
    /// features in two processes (the CLI and the library), rel: f64 summation order only
    /// (libtorch may split a GEMM over another thread count; MKL adapts it to the load).
    TOL_MERGE_REL = 1e-12, worst "—";
    /// KID (mean, std; default and custom kernels), precision/recall (k = 3, 5) and the
    /// Inception Score (10 and 3 splits) vs torch-fidelity 0.4.0's metric functions on fixed
    /// small float64 arrays, rel: the same subset draws and f64 arithmetic in another order
    /// (precision/recall are counts; torch-fidelity's f32 `.mean()` rounds them by ~1e-8).
    TOL_METRICS_REL = 1e-6, worst "2.5e-8 (precision: f32 mean); KID 1.4e-14, IS 1.7e-16";
    /// KID on one full subset vs the unbiased MMD² restated with plain f64 loops, and IS of
    /// one-hot / uniform predictions vs K / 1, rel: summation order only.
    TOL_METRICS_VS_FORMULA_REL = 1e-12, worst "3.6e-14";
    /// KID and precision/recall with f32 feature products (`--metrics-dtype f32`; kernels,
    /// distances and sums f64) vs torch-fidelity 0.4.0 on float64 arrays, vs the plain-f64
    /// formulas and vs our f64 products, rel: the products' f32 rounding only (~1e-7 of the
    /// kernel values). The precision/recall counts must be equal (one count is 1/57 here).
    TOL_METRICS_F32_REL = 1e-5, worst "9.0e-7 (KID, f32 vs f64 products via the CLI); vs torch-fidelity 4.5e-7; counts equal";
    /// `tiw dataset convert` of JPEG sources vs PIL's decode of the same files: max |ours − PIL|
    /// over full scale (255), i.e. abs on [0, 1] pixels. zune-jpeg and libjpeg-turbo use
    /// different IDCTs and chroma upsampling (JPEG leaves both to the decoder), so pixels may
    /// differ by a few levels, 4:2:0 chroma the widest; 2.4e-2 = 6 levels. PNG sources are exact.
    TOL_JPEG = 2.4e-2, worst "1.6e-2 = 4 levels (RGB 4:2:0, progressive); 3.9e-3 = 1 level (gray)";
}

/// Checks that hold exactly (no tolerance): (what is compared, result).
pub const EXACT_CHECKS: &[(&str, &str)] = &[
    ("6 EDM snapshots (`nets/*`: DDPM++, NCSN++, ADM; EDM/VP/VE preconditioning; conditional) vs `state_dict.npz`", "names and order identical; every tensor bit-identical; `init_kwargs`, `sigma_min/max`, class, parameter counts equal `config.json`"),
    ("extractor, discriminator (zip) and conditional discriminator (legacy format) vs `*.digest.json`", "name sets equal; sha256 of every tensor equal"),
    ("`training-state-002560.pt`", "net tensors bit-identical to the recorded post-step weights; Adam `exp_avg` = 0.1·grad exactly, `step` = 1"),
    ("`.pt → .safetensors → .pt → .safetensors`", "tensor bytes stable; `.pt` files byte-identical"),
    ("our `.pt` in `torch.load(weights_only=True)`, our `.safetensors` in `safetensors.torch.load_file` (torch 2.13)", "bit-identical"),
    ("the 7 full-size `keys/*.json` listings (names, order, shapes, param/buffer, counts)", "identical"),
    ("ONNX graphs: `onnx.checker` (full)", "pass"),
    ("per-seed latents, labels and churn noise vs `torch.Generator('cpu')`", "bit-identical"),
    ("`--shard` 3 ways vs the full run; `--resume`", "identical PNG bytes"),
    ("reference npz written back", "byte-identical to numpy's"),
    ("discriminator training step: sampled t", "exact"),
    ("`dataset.zip` items, labels, x-flips; `samples` npz (stored and deflated); ToTensor scaling", "bit-exact"),
    ("InfiniteSampler index streams vs NumPy (8 cases, up to 30k indices, 4 ranks)", "identical"),
    ("resume: `tiw train` killed with SIGKILL and resumed vs uninterrupted; `train-classifier` 2 + 2 vs 4 iterations", "bit-identical"),
    ("`--resume` of the official `training-state-*.pt` + `.pkl`", "net tensors bit-identical, Adam steps carried over"),
    ("fresh-network initialisers vs PyTorch 2.13 (nn.Linear/Conv defaults, EDM `weight_init` modes, embeddings)", "bit-identical"),
    ("position-keyed draws (σ, noise, augmentation) of a step split 7 ways × 2 layouts vs one call", "bit-identical"),
    ("`tiw generate` on 2 ranks (`tiw launch`) vs 1 process", "identical PNG bytes"),
    ("2-rank training (`tiw launch`, `torchrun --no-python`) vs 1 process: EDM 4 and 12 steps, TIW-DSM corrected, `train-classifier`; one rank SIGKILLed and resumed on 1 and 2 ranks", "bit-identical"),
];

/// Checks run outside `cargo test` (their bounds live with them): (what, bound, result).
pub const OTHER_CHECKS: &[(&str, &str, &str)] = &[
    ("the benchmarks' PyTorch eager baseline (`benches/pytorch_baseline.py selfcheck`: DDPM++, extractor, discriminator, weight correction, TIW-EDM loss with recorded draws) vs the official outputs", "1e-5 / 2e-5", "worst 7.7e-6 (weight correction)"),
    ("on CUDA (one run on an NVIDIA H200, libtorch 2.11+cu130; scripts/gpu): 6 fixture nets' `D`/`F_x`, extractor + discriminator, `tiw verify --device cuda`", "1e-4", "worst 2.0e-6 normalised (plain f32 convolutions; with cuDNN's TF32 up to ~1e-3)"),
];

/// docs/PARITY.md as generated from the tables above.
pub fn parity_markdown() -> String {
    let mut s = String::from(
        "# Parity with the official code\n\n\
         Generated from `tests/common/tolerances.rs` by `TIW_BLESS=1 cargo test --test docs` \
         (the same test fails when this file is stale); edit the table there, not here.\n\n\
         Error measure, unless a row says otherwise: `tiw::parity::norm_err` = \
         max |ours − reference| / max |reference| (\"abs\": max |ours − reference|; \"rel\": of a \
         scalar, |ours − reference| / |reference|). \"Worst\" is the largest error measured when \
         the entry was last reviewed (— where only the bound is asserted).\n\n\
         ## Tolerances\n\n\
         | constant | bound | what it bounds, and why this value | worst |\n|---|---|---|---|\n",
    );
    for t in TABLE {
        let doc = t.doc.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        let doc = doc.replace('|', "\\|").replace("[`", "`").replace("`]", "`");
        s += &format!("| `{}` | {:e} | {} | {} |\n", t.name, t.value, doc, t.worst);
    }
    s += "\n## Exact checks\n\n| check | result |\n|---|---|\n";
    for (what, result) in EXACT_CHECKS {
        s += &format!("| {what} | {result} |\n");
    }
    s += "\n## Checks outside `cargo test`\n\n| check | bound | result |\n|---|---|---|\n";
    for (what, bound, result) in OTHER_CHECKS {
        s += &format!("| {what} | {bound} | {result} |\n");
    }
    s
}
