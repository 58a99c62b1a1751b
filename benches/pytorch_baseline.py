"""PyTorch eager baseline for `cargo bench --bench models` and `--bench train`.

The issues' anchors are the official PyTorch code timed on the machine where the issues were
written; on any other CPU they are not comparable. This script measures the same work with
PyTorch eager on *this* machine, in the same benchmark run, so our numbers can be reported as
ratios against it:

* `forward`: the CIFAR-10 DDPM++ EDM denoiser (EDMPrecond ∘ SongUNet), no_grad, at the batch
  sizes asked for; the weights are the benchmark's random `.safetensors` file (the official
  state_dict names), and the output is checked against the Rust tch output before timing.
* `forward-adm`: the 32×32 ADM feature extractor (features) and the 512-channel
  discriminator head, likewise checked against the Rust outputs, then timed.
* `train-edm`, `train-tiw`: one EDM / TIW-EDM (official mode) training step at a given batch —
  loss, backward, gradient sanitising, Adam, EMA — as SPEC §4/§5.1 describe it. The TIW step
  holds the frozen extractor and discriminator as the official code does (parameters keep
  requires_grad; every attention block is recomputed in the backward with its parameter
  gradients, SPEC §9.11). No augmentation: the baseline does a little less work than our
  step with the AugmentPipe.
* `selfcheck --fixtures tests/fixtures`: all of the above modules against the official code's
  recorded outputs (DDPM++ forward, extractor/discriminator forward, weight correction,
  TIW-EDM loss with the recorded draws); `make test` runs it (tests/python_interop.rs).

The modules below are written from SPEC §2–§4 (architectures, parameter names, losses), not
copied from the official sources (their licence is non-commercial). They cover the
configurations the benchmarks use: SongUNet with the positional embedding, standard encoder
and decoder, resample filter [1,1], optional augment labels, EDMPrecond; ADM's
EncoderUNetModel as create_classifier builds it (unconditional).

Usage (the benchmarks call it with `$TIW_TORCH_PY`, the full-torch venv `make test` keeps):
  python benches/pytorch_baseline.py forward --weights W.safetensors --inputs IN.npz \
      --batches 1,16 --runs 3,2 --out OUT.json
  python benches/pytorch_baseline.py forward-adm --extractor FE --discriminator DIS \
      --inputs IN.npz --out OUT.json
  python benches/pytorch_baseline.py train-edm [--weights W.safetensors] --batch 8 --steps 6 --out OUT.json
  python benches/pytorch_baseline.py train-tiw --extractor FE.pt --discriminator DIS.pt --out OUT.json
  python benches/pytorch_baseline.py selfcheck --fixtures tests/fixtures
"""

import argparse
import json
import math
import resource
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


# --- weights ------------------------------------------------------------------------------

def read_safetensors(path):
    """The tensors of a safetensors file (F32 only), as a name → tensor dict."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError(f"{path}: {name} has dtype {meta['dtype']}, expected F32")
        a, b = meta["data_offsets"]
        out[name] = torch.frombuffer(bytearray(body[a:b]), dtype=torch.float32).reshape(meta["shape"])
    return out


# --- SongUNet (SPEC §2.1, §2.2) -------------------------------------------------------------

class Linear(nn.Module):
    def __init__(self, cin, cout, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x):
        y = x @ self.weight.t()
        return y + self.bias if self.bias is not None else y


class Conv2d(nn.Module):
    def __init__(self, cin, cout, kernel, up=False, down=False):
        super().__init__()
        self.up, self.down = up, down
        self.weight = nn.Parameter(torch.zeros(cout, cin, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(cout)) if kernel else None
        if up or down:
            self.register_buffer("resample_filter", torch.full((1, 1, 2, 2), 0.25))
        else:
            self.resample_filter = None

    def forward(self, x):
        c = x.shape[1]
        if self.up:
            f = (self.resample_filter * 4).tile([c, 1, 1, 1])
            x = F.conv_transpose2d(x, f, groups=c, stride=2)
        if self.down:
            f = self.resample_filter.tile([c, 1, 1, 1])
            x = F.conv2d(x, f, groups=c, stride=2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
            x = x + self.bias.reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.groups = min(32, c // 4)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


class UNetBlock(nn.Module):
    """DDPM++ block: adaptive_scale False, skip_scale sqrt(0.5), eps 1e-6, resample_proj True,
    one attention head."""

    def __init__(self, cin, cout, emb, up=False, down=False, attention=False, dropout=0.0):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.dropout = dropout
        self.norm0 = GroupNorm(cin, 1e-6)
        self.conv0 = Conv2d(cin, cout, 3, up=up, down=down)
        self.affine = Linear(emb, cout)
        self.norm1 = GroupNorm(cout, 1e-6)
        self.conv1 = Conv2d(cout, cout, 3)
        self.skip = Conv2d(cin, cout, 1, up=up, down=down) if (cin != cout or up or down) else None
        self.attention = attention
        if attention:
            self.norm2 = GroupNorm(cout, 1e-6)
            self.qkv = Conv2d(cout, 3 * cout, 1)
            self.proj = Conv2d(cout, cout, 1)

    def forward(self, x, emb):
        s = math.sqrt(0.5)
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb).unsqueeze(2).unsqueeze(3)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = (h + (self.skip(x) if self.skip is not None else x)) * s
        if self.attention:
            n, c, hh, ww = h.shape
            t = self.qkv(self.norm2(h)).reshape(n, c, 3, hh * ww)
            q, k, v = t.unbind(2)
            w = torch.einsum("ncq,nck->nqk", q, k / math.sqrt(c)).softmax(dim=2)
            a = torch.einsum("nqk,nck->ncq", w, v)
            h = (self.proj(a.reshape(n, c, hh, ww)) + h) * s
        return h


class SongUNet(nn.Module):
    def __init__(self, res=32, cin=3, cout=3, augment_dim=9, mc=128, mult=(2, 2, 2), blocks=4,
                 attn=(16,), dropout=0.0):
        super().__init__()
        self.mc = mc
        e = 4 * mc
        self.map_augment = Linear(augment_dim, mc, bias=False) if augment_dim else None
        self.map_layer0 = Linear(mc, 4 * mc)
        self.map_layer1 = Linear(4 * mc, 4 * mc)
        self.enc = nn.ModuleDict()
        c = cin
        for level, m in enumerate(mult):
            r = res >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv2d(c, mc, 3)
                c = mc
            else:
                self.enc[f"{r}x{r}_down"] = UNetBlock(c, c, e, down=True, dropout=dropout)
            for i in range(blocks):
                self.enc[f"{r}x{r}_block{i}"] = UNetBlock(c, mc * m, e, attention=r in attn, dropout=dropout)
                c = mc * m
        skips = [mc] + [b.out_channels for n, b in self.enc.items() if not n.endswith("_conv")]
        self.dec = nn.ModuleDict()
        for level in reversed(range(len(mult))):
            r = res >> level
            if level == len(mult) - 1:
                self.dec[f"{r}x{r}_in0"] = UNetBlock(c, c, e, attention=True, dropout=dropout)
                self.dec[f"{r}x{r}_in1"] = UNetBlock(c, c, e, dropout=dropout)
            else:
                self.dec[f"{r}x{r}_up"] = UNetBlock(c, c, e, up=True, dropout=dropout)
            for i in range(blocks + 1):
                cnew = mc * mult[level]
                self.dec[f"{r}x{r}_block{i}"] = UNetBlock(
                    c + skips.pop(), cnew, e, attention=(i == blocks and r in attn), dropout=dropout)
                c = cnew
            if level == 0:
                self.dec[f"{r}x{r}_aux_norm"] = GroupNorm(c, 1e-6)
                self.dec[f"{r}x{r}_aux_conv"] = Conv2d(c, cout, 3)

    def forward(self, x, noise_labels, augment_labels=None):
        half = self.mc // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32) / (half - 1))
        e = noise_labels.ger(freqs)
        e = torch.cat([e.sin(), e.cos()], dim=1)  # PositionalEmbedding's [cos, sin], halves swapped
        if self.map_augment is not None and augment_labels is not None:
            e = e + self.map_augment(augment_labels)
        e = F.silu(self.map_layer0(e))
        e = F.silu(self.map_layer1(e))
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, e)
            skips.append(x)
        tmp = None
        for name, block in self.dec.items():
            if name.endswith("_aux_norm"):
                tmp = block(x)
            elif name.endswith("_aux_conv"):
                x = block(F.silu(tmp))
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, e)
        return x


class EDMPrecond(nn.Module):
    def __init__(self, sigma_data=0.5, **kw):
        super().__init__()
        self.sigma_data = sigma_data
        self.model = SongUNet(**kw)

    def forward(self, x, sigma, augment_labels=None):
        sigma = sigma.reshape(-1, 1, 1, 1)
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.log() / 4
        f = self.model(c_in * x, c_noise.flatten(), augment_labels)
        return c_skip * x + c_out * f


def load_net(weights, dropout=0.0):
    """The DDPM++ denoiser with the weights of a safetensors file, or (None) random weights:
    N(0, 1/fan_in) for matrices and kernels, zero biases, unit norm scales."""
    net = EDMPrecond(dropout=dropout)
    if weights:
        net.load_state_dict(read_safetensors(weights), strict=True)
    else:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return net


# --- ADM EncoderUNetModel: feature extractor and discriminator (SPEC §2.5, §2.6) ------------

def adm_time_features(t, dim):
    """The `dim`-channel sinusoidal embedding of t·999: [cos(t·999·f_k), sin(t·999·f_k)],
    f_k = exp(−ln(10000)·k/(dim/2)), k = 0..dim/2−1."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / half))
    args = (t.float() * 999)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class RecomputedInBackward(torch.autograd.Function):
    """What the official code does around every ADM attention block (SPEC §9.11): the forward
    runs without building a graph; the backward runs the block again with autograd on and
    differentiates it with respect to its input *and all its parameters* (the parameter
    gradients are computed and then dropped). Costs time only; the values are unchanged."""

    @staticmethod
    def forward(ctx, block, x, *params):
        ctx.block = block
        ctx.save_for_backward(x)
        ctx.params = params
        with torch.no_grad():
            return block.attend(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = ctx.block.attend(x.view_as(x))
            grads = torch.autograd.grad(y, (x,) + tuple(ctx.params), grad_out, allow_unused=True)
        return (None,) + grads


class AdmResBlock(nn.Module):
    """Scale-shift residual block; `down` halves the resolution by 2×2 average pooling of both
    the normalised activations (before the first convolution) and the skip path."""

    def __init__(self, ch, out, emb, down=False):
        super().__init__()
        self.down = down
        self.in_layers = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(32, out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == ch else nn.Conv2d(ch, out, 1)

    def forward(self, x, emb):
        if self.down:
            h = F.avg_pool2d(self.in_layers[1](self.in_layers[0](x)), 2)
            x = F.avg_pool2d(x, 2)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        return self.skip_connection(x) + h


def attention_weights(q, k, ch):
    """softmax over s of Σ_c q[c,t]·k[c,s] / sqrt(ch) (q and k each scaled by ch^(−1/4))."""
    s = ch ** -0.25
    return torch.einsum("bct,bcs->bts", q * s, k * s).softmax(dim=-1)


class AdmAttention(nn.Module):
    """Self-attention over the H·W positions, 64 channels per head, legacy q|k|v layout per
    head; residual. `recompute` reproduces the official backward (RecomputedInBackward)."""

    def __init__(self, c, recompute=False):
        super().__init__()
        self.heads = c // 64
        self.recompute = recompute
        self.norm = nn.GroupNorm(32, c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = nn.Conv1d(c, c, 1)

    def attend(self, x):
        b, c, hh, ww = x.shape
        x = x.reshape(b, c, hh * ww)
        ch = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(b * self.heads, 3 * ch, hh * ww).split(ch, dim=1)
        a = torch.einsum("bts,bcs->bct", attention_weights(q, k, ch), v).reshape(b, c, hh * ww)
        return (x + self.proj_out(a)).reshape(b, c, hh, ww)

    def forward(self, x):
        if self.recompute and torch.is_grad_enabled():
            return RecomputedInBackward.apply(self, x, *self.parameters())
        return self.attend(x)


class AdmAttentionPool(nn.Module):
    """Token 0 = the spatial mean, then the S² positions; learned positional embedding;
    attention (q|k|v chunked along channels, 64 channels per head); c_proj of token 0."""

    def __init__(self, s, c, out):
        super().__init__()
        self.heads = c // 64
        self.positional_embedding = nn.Parameter(torch.randn(c, s * s + 1) / c**0.5)
        self.qkv_proj = nn.Conv1d(c, 3 * c, 1)
        self.c_proj = nn.Conv1d(c, out, 1)

    def forward(self, x):
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding[None]
        n, ch = x.shape[-1], c // self.heads
        q, k, v = (z.reshape(b * self.heads, ch, n) for z in self.qkv_proj(x).chunk(3, dim=1))
        a = torch.einsum("bts,bcs->bct", attention_weights(q, k, ch), v).reshape(b, c, n)
        return self.c_proj(a)[:, :, 0]


class EmbSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, AdmResBlock) else layer(x)
        return x


class AdmEncoder(nn.Module):
    """EncoderUNetModel as create_classifier builds it: `width` base channels (128 in TIW),
    time embedding of 4·width, scale-shift norm, down-sampling res blocks, attention pooling."""

    def __init__(self, image_size, cin, depth, mult, attention_ds, out_channels, recompute=False, width=128):
        super().__init__()
        self.width = width
        e = 4 * width
        self.time_embed = nn.Sequential(nn.Linear(width, e), nn.SiLU(), nn.Linear(e, e))
        ch = width * mult[0]
        self.input_blocks = nn.ModuleList([EmbSequential(nn.Conv2d(cin, ch, 3, padding=1))])
        ds = 1
        for level, m in enumerate(mult):
            for _ in range(depth):
                layers = [AdmResBlock(ch, width * m, e)]
                ch = width * m
                if ds in attention_ds:
                    layers.append(AdmAttention(ch, recompute))
                self.input_blocks.append(EmbSequential(*layers))
            if level != len(mult) - 1:
                self.input_blocks.append(EmbSequential(AdmResBlock(ch, ch, e, down=True)))
                ds *= 2
        self.middle_block = EmbSequential(
            AdmResBlock(ch, ch, e), AdmAttention(ch, recompute), AdmResBlock(ch, ch, e))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), AdmAttentionPool(image_size // ds, ch, out_channels))

    def forward(self, x, t, feature=False):
        emb = self.time_embed(adm_time_features(t, self.width))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return h if feature else self.out(h)


def feature_extractor_32(recompute=False):
    """The 32×32 classifier of load_classifier(p, 32): depth 4, mult (1,2,4), attention at
    every level, 1000-way head (47,771,112 parameters)."""
    return AdmEncoder(32, 3, 4, (1, 2, 4), {1, 2, 4}, 1000, recompute)


def discriminator_512(recompute=False):
    """The unconditional time-dependent discriminator on 512×8×8 features (2,883,841 parameters)."""
    return AdmEncoder(8, 512, 2, (1,), {1}, 1, recompute)


def read_weights(path):
    """A state_dict from a .safetensors file or a torch.save zip (plain tensors only)."""
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_adm(make, path, recompute=False):
    """`make(recompute)` with the weights of `path`, in eval mode. Without `recompute` the
    parameters are frozen (inference); with it they keep requires_grad, as the official
    training code leaves them (SPEC §9.11)."""
    net = make(recompute)
    net.load_state_dict(read_weights(path), strict=True)
    net.eval()
    return net if recompute else net.requires_grad_(False)


# --- measurements -------------------------------------------------------------------------

def timed(fn, runs):
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def rel_err(ours, ref):
    """max |ours − ref| / max |ref|."""
    return float((ours - ref).abs().max() / ref.abs().max())


def check_against_rust(what, ours, ref):
    """`ours` against the Rust tch output `ref` (an array) before timing: prints the error and
    stops if the module does not reproduce it (≤ 1e-4)."""
    err = rel_err(ours, torch.from_numpy(ref).reshape(ours.shape))
    print(f"pytorch baseline: {what} vs Rust tch: max |Δ| / max|ref| = {err:.2e}", flush=True)
    if not err <= 1e-4:
        raise SystemExit(f"pytorch baseline: the module does not reproduce the Rust {what} ({err:.2e})")
    return err


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def cmd_forward(a):
    net = load_net(a.weights).eval().requires_grad_(False)
    inp = np.load(a.inputs)
    x = torch.from_numpy(inp["x"])
    sigma = torch.from_numpy(inp["sigma"])
    aug = torch.from_numpy(inp["augment_labels"]) if "augment_labels" in inp else None
    with torch.no_grad():
        d = net(x, sigma, aug)
    err = check_against_rust("DDPM++ D", d, inp["D"]) if "D" in inp else None
    rows = []
    for batch, runs in zip(a.batches, a.runs):
        xb, sb = x[:batch].contiguous(), sigma[:batch].contiguous()
        ab = aug[:batch].contiguous() if aug is not None else None
        with torch.no_grad():
            ts = timed(lambda: net(xb, sb, ab), runs)
        ms = [t * 1e3 / batch for t in ts]
        print(f"pytorch baseline: DDPM++ batch {batch}: best {min(ms):.1f} ms/image "
              f"(median {sorted(ms)[len(ms) // 2]:.1f}, {runs} runs)", flush=True)
        rows.append({"batch": batch, "ms_per_image": ms})
    write_json(a.out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "max_rel_err": err,
                       "forward": rows, "peak_rss_mb": peak_rss_mb()})


def cmd_forward_adm(a):
    """The 32×32 extractor (features) and the discriminator head at one batch, checked against
    the Rust outputs in the inputs file, then timed."""
    fe = load_adm(feature_extractor_32, a.extractor)
    dis = load_adm(discriminator_512, a.discriminator)
    inp = np.load(a.inputs)
    x = torch.from_numpy(inp["x"])
    t = torch.from_numpy(inp["t"])
    with torch.no_grad():
        feats = fe(x, t, feature=True)
        logits = dis(feats, t)
    errs = {name: check_against_rust(f"ADM {name}", ours, inp[name])
            for name, ours in [("features", feats), ("logits", logits)]}
    batch = x.shape[0]
    rows = []
    for net, fn, one, runs in [
        ("extractor", lambda: fe(x, t, feature=True), lambda: fe(x[:1], t[:1], feature=True),
         a.runs_extractor),
        ("discriminator", lambda: dis(feats, t), lambda: dis(feats[:1], t[:1]), a.runs_discriminator),
    ]:
        with torch.no_grad():
            ms = [s * 1e3 / batch for s in timed(fn, runs)]
            with FlopCounterMode(display=False) as count:
                one()
        gflop = count.get_total_flops() / 1e9
        print(f"pytorch baseline: ADM {net} batch {batch}: best {min(ms):.2f} ms/image "
              f"(median {sorted(ms)[len(ms) // 2]:.2f}, {runs} runs); {gflop:.3f} GFLOP/image", flush=True)
        rows.append({"net": net, "batch": batch, "ms_per_image": ms, "gflop_per_image": gflop})
    write_json(a.out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "max_rel_err": errs,
                       "forward": rows, "peak_rss_mb": peak_rss_mb()})


def vp_time_and_scale(sigma):
    """(τ, α) for an EDM/VE noise level σ (SPEC §3): τ solves B(τ) = ln(1+σ²) with
    B(t) = ½(β1−β0)t² + β0t, β0 = 0.1, β1 = 20, and α = exp(−B(τ)/2) (= 1/sqrt(1+σ²)), in
    classifier_lib's operation order (the networks see 999·τ, so τ's rounding matters)."""
    b0, b1 = 0.1, 20.0
    tau = ((b0**2 + 2 * (b1 - b0) * (sigma**2 + 1).log()).sqrt() - b0) / (b1 - b0)
    return tau, (-0.25 * tau**2 * (b1 - b0) - 0.5 * tau * b0).exp()


def weight_correction(fe, dis, x, sigma):
    """TIW's weight correction as the official code computes it (SPEC §3, §4): x_vp = α·x,
    d = clip(sigmoid(dis(fe(x_vp, τ), τ)), 1e-5, 1 − 1e-5), corr = −σ²·α·∂Σd/∂x_vp; both
    detached. The networks keep requires_grad and recompute attention in the backward."""
    tau, alpha = vp_time_and_scale(sigma.flatten())
    with torch.enable_grad():
        x_vp = (alpha.reshape(-1, 1, 1, 1) * x).float().detach().requires_grad_(True)
        d = torch.sigmoid(dis(fe(x_vp, tau, feature=True), tau)).reshape(-1).clip(1e-5, 1 - 1e-5)
        (g,) = torch.autograd.grad(d.sum(), x_vp)
    corr = -(sigma**2) * alpha.reshape(-1, 1, 1, 1) * g
    return corr.detach(), d.detach()


def edm_loss(net, images, rnd, unit_noise, augment_labels=None, guidance=None, sigma_data=0.5):
    """Per-element training loss for recorded draws (SPEC §4): σ = exp(P_std·rnd + P_mean)
    (P_mean −1.2, P_std 1.2), λ = (σ² + σd²)/(σ·σd)², n = σ·unit_noise, D = net(y + n, σ).
    EDM: λ·(D − y)². TIW-EDM (`guidance` = (extractor, discriminator), official mode): the
    weight correction (corr, d) of y + n, target y + corr (in place), weight 2d broadcast as
    the official code does it — a [B,1,1,B,C,H,W] tensor (SPEC §9.2). Returns (loss, parts)."""
    sigma = (rnd * 1.2 - 1.2).exp()
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    y = images.clone()
    n = unit_noise * sigma
    d = net(y + n, sigma, augment_labels)
    if guidance is None:
        return weight * (d - y) ** 2, {"D": d}
    corr, pred = weight_correction(*guidance, y + n, sigma)
    y += corr
    w = (2 * pred).reshape(-1, 1, 1, 1)[:, None, None, None]
    return w * (weight * (d - y) ** 2), {"D": d, "correction": corr, "prediction": pred, "target": y}


def cmd_train(a):
    """Training steps as SPEC §4/§5.1 describe them: `edm_loss` (EDM, or TIW-EDM in official
    mode with the frozen extractor and discriminator as the official code holds them), the
    summed loss ×1/batch back-propagated, non-finite gradients zeroed, Adam(β 0.9/0.999,
    ε 1e-8), EMA. No augmentation (our step runs the AugmentPipe at p = 0.12, a little more
    work)."""
    torch.manual_seed(0)
    tiw = a.cmd == "train-tiw"
    net = load_net(a.weights, dropout=a.dropout).train()
    ema = EDMPrecond().eval().requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    guidance = None
    if tiw:
        guidance = (load_adm(feature_extractor_32, a.extractor, recompute=True),
                    load_adm(discriminator_512, a.discriminator, recompute=True))
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    images = torch.rand(a.batch, 3, 32, 32) * 2 - 1

    def step():
        opt.zero_grad(set_to_none=True)
        rnd = torch.randn(a.batch, 1, 1, 1)
        loss, _ = edm_loss(net, images, rnd, torch.randn_like(images), torch.zeros(a.batch, 9), guidance)
        loss.sum().mul(1 / a.batch).backward()
        for p in net.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.copy_(p.detach().lerp(pe, 0.999))

    ts = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
        print(f"pytorch baseline: {'TIW-EDM' if tiw else 'EDM'} step {len(ts)}: {ts[-1]:.2f} s", flush=True)
    write_json(a.out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "step_s": ts,
                       "peak_rss_mb": peak_rss_mb()})


def cmd_selfcheck(a):
    """The baseline's modules against the official code's outputs (the fixtures): DDPM++
    (EDMPrecond ∘ SongUNet) forward, the ADM extractor and discriminator forward, TIW's weight
    correction and the TIW-EDM loss with the recorded draws. Prints the worst error per tensor
    (max |Δ| / max |ref|) and exits with status 1 if one exceeds its tolerance. The weight
    correction needs MKL_CBWR=COMPATIBLE on CPUs where MKL would pick FMA kernels (as `make
    test` sets)."""
    root = a.fixtures.rstrip("/")
    failed = []

    def check(what, ours, ref, tol):
        ref = torch.as_tensor(np.asarray(ref))
        ours = ours.detach().reshape(ref.shape).to(ref.dtype)
        err = rel_err(ours, ref)
        ok = err <= tol
        print(f"  {what:<48} {err:.2e} (tolerance {tol:.0e}) {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(what)

    name = "edm_ddpmpp_r16_uncond"
    with open(f"{root}/nets/{name}/config.json") as f:
        cfg = json.load(f)
    nk, ik = cfg["network_kwargs"], cfg["interface_kwargs"]
    variant = (nk.get("embedding_type", "positional"), nk.get("encoder_type", "standard"),
               nk.get("decoder_type", "standard"), nk.get("resample_filter", [1, 1]))
    if variant != ("positional", "standard", "standard", [1, 1]):
        raise SystemExit(f"{name}: not the DDPM++ variant this module covers")
    net = EDMPrecond(res=ik["img_resolution"], cin=ik["img_channels"], cout=ik["img_channels"],
                     augment_dim=nk["augment_dim"], mc=nk["model_channels"], mult=tuple(nk["channel_mult"]),
                     blocks=nk["num_blocks"], attn=tuple(nk["attn_resolutions"])).eval().requires_grad_(False)
    sd = np.load(f"{root}/nets/{name}/state_dict.npz")
    net.load_state_dict({k: torch.from_numpy(sd[k]) for k in sd.files}, strict=True)
    f = np.load(f"{root}/nets/{name}/forward.npz")
    x, sigma = torch.from_numpy(f["x"]), torch.from_numpy(f["sigma"])
    with torch.no_grad():
        check(f"{name} D", net(x, sigma), f["D"], 1e-5)
        check(f"{name} D_augment", net(x, sigma, torch.from_numpy(f["augment_labels"])), f["D_augment"], 1e-5)

    fe = load_adm(lambda r: AdmEncoder(16, 3, 2, (1, 2), {1, 2}, 1000, r, width=64),
                  f"{root}/classifier/feature_extractor.pt", recompute=True)
    dis = load_adm(lambda r: AdmEncoder(8, 128, 2, (1,), {1}, 1, r, width=64),
                   f"{root}/classifier/discriminator.pt", recompute=True)
    f = np.load(f"{root}/classifier/forward.npz")
    x, t = torch.from_numpy(f["x"]), torch.from_numpy(f["t"])
    with torch.no_grad():
        feats = fe(x, t, feature=True)
        check("classifier features", feats, f["features"], 2e-5)
        check("classifier fe_logits", fe(x, t), f["fe_logits"], 2e-5)
        check("classifier dis_logits", dis(feats, t), f["dis_logits"], 2e-5)
    g = np.load(f"{root}/classifier/guidance.npz")
    corr, pred = weight_correction(fe, dis, torch.from_numpy(g["unnormalized_input"]),
                                   torch.from_numpy(g["std_wve_t"]).reshape(-1, 1, 1, 1))
    check("guidance weight_correction_res3", corr, g["weight_correction_res3"], 2e-5)
    check("guidance weight_correction_res3_prediction", pred, g["weight_correction_res3_prediction"], 2e-5)

    g = np.load(f"{root}/loss/tiw_edm_loss.npz")
    loss, parts = edm_loss(net, torch.from_numpy(g["images"]), torch.from_numpy(g["rnd_normal"]),
                           torch.from_numpy(g["unit_noise"]), None, (fe, dis))
    check("tiw_edm_loss D_yn", parts["D"], g["D_yn"], 1e-5)
    check("tiw_edm_loss correction", parts["correction"], g["correction"], 2e-5)
    check("tiw_edm_loss prediction", parts["prediction"], g["prediction"], 2e-5)
    check("tiw_edm_loss target (images_after_call)", parts["target"], g["images_after_call"], 1e-5)
    if tuple(loss.shape) != g["loss"].shape:
        failed.append("tiw_edm_loss shape")
        print(f"  tiw_edm_loss shape {tuple(loss.shape)} != {g['loss'].shape} FAIL")
    check("tiw_edm_loss loss", loss, g["loss"], 1e-5)
    check("tiw_edm_loss loss_sum", loss.sum(), g["loss_sum"], 1e-5)
    if failed:
        raise SystemExit(f"pytorch baseline selfcheck: {len(failed)} failed: {', '.join(failed)}")
    print("pytorch baseline selfcheck: all checks passed")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward")
    f.add_argument("--weights", required=True)
    f.add_argument("--inputs", required=True)
    f.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    f.add_argument("--runs", type=lambda s: [int(v) for v in s.split(",")], default=[3, 2])
    f.add_argument("--out", required=True)
    f = sub.add_parser("forward-adm")
    f.add_argument("--extractor", required=True, help="32×32 extractor weights (.safetensors or .pt)")
    f.add_argument("--discriminator", required=True, help="512-channel discriminator weights")
    f.add_argument("--inputs", required=True, help="npz with x, t and the Rust features, logits")
    f.add_argument("--runs-extractor", type=int, default=3)
    f.add_argument("--runs-discriminator", type=int, default=10)
    f.add_argument("--out", required=True)
    c = sub.add_parser("selfcheck", help="check the modules against the official outputs (fixtures)")
    c.add_argument("--fixtures", required=True, help="the fixture folder (tests/fixtures)")
    for name in ["train-edm", "train-tiw"]:
        t = sub.add_parser(name)
        t.add_argument("--weights", help="safetensors file (default: random weights)")
        t.add_argument("--batch", type=int, default=8)
        t.add_argument("--steps", type=int, default=6)
        t.add_argument("--lr", type=float, default=1e-3)
        t.add_argument("--dropout", type=float, default=0.13)
        t.add_argument("--out", required=True)
        if name == "train-tiw":
            t.add_argument("--extractor", required=True, help="32×32 extractor weights (.pt or .safetensors)")
            t.add_argument("--discriminator", required=True, help="512-channel discriminator weights")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    {"forward": cmd_forward, "forward-adm": cmd_forward_adm, "train-edm": cmd_train,
     "train-tiw": cmd_train, "selfcheck": cmd_selfcheck}[a.cmd](a)


if __name__ == "__main__":
    main()
