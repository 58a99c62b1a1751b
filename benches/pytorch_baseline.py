"""PyTorch eager baseline for `cargo bench --bench models` and `--bench train`.

The issues' anchors are the official PyTorch code timed on the machine where the issues were
written; on any other CPU they are not comparable. This script measures the same work with
PyTorch eager on *this* machine, in the same benchmark run, so our numbers can be reported as
ratios against it:

* `forward`: the CIFAR-10 DDPM++ EDM denoiser (EDMPrecond ∘ SongUNet), no_grad, at the batch
  sizes asked for; the weights are the benchmark's random `.safetensors` file (the official
  state_dict names), and the output is checked against the Rust tch output before timing.
* `train-edm`: one EDM-loss training step at a given batch — loss, backward, gradient
  sanitising, Adam, EMA — as SPEC §4/§5.1 describe it (no augmentation: the baseline does
  slightly less work than our step, which runs the AugmentPipe).

The module below is written from SPEC §2 (architectures and parameter names), not copied from
the official sources (their licence is non-commercial). It covers the configurations the
benchmarks use: SongUNet with the positional embedding, standard encoder and decoder,
resample filter [1,1], optional augment labels, EDMPrecond.

Usage (the benchmarks call it with `$TIW_TORCH_PY`, the full-torch venv `make test` keeps):
  python benches/pytorch_baseline.py forward --weights W.safetensors --inputs IN.npz \
      --batches 1,16 --runs 3,2 --out OUT.json
  python benches/pytorch_baseline.py train-edm [--weights W.safetensors] --batch 8 --steps 6 --out OUT.json
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

    def __init__(self, cin, cout, up=False, down=False, attention=False, dropout=0.0):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.dropout = dropout
        self.norm0 = GroupNorm(cin, 1e-6)
        self.conv0 = Conv2d(cin, cout, 3, up=up, down=down)
        self.affine = Linear(512, cout)
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
                self.enc[f"{r}x{r}_down"] = UNetBlock(c, c, down=True, dropout=dropout)
            for i in range(blocks):
                self.enc[f"{r}x{r}_block{i}"] = UNetBlock(c, mc * m, attention=r in attn, dropout=dropout)
                c = mc * m
        skips = [mc] + [b.out_channels for n, b in self.enc.items() if not n.endswith("_conv")]
        self.dec = nn.ModuleDict()
        for level in reversed(range(len(mult))):
            r = res >> level
            if level == len(mult) - 1:
                self.dec[f"{r}x{r}_in0"] = UNetBlock(c, c, attention=True, dropout=dropout)
                self.dec[f"{r}x{r}_in1"] = UNetBlock(c, c, dropout=dropout)
            else:
                self.dec[f"{r}x{r}_up"] = UNetBlock(c, c, up=True, dropout=dropout)
            for i in range(blocks + 1):
                cnew = mc * mult[level]
                self.dec[f"{r}x{r}_block{i}"] = UNetBlock(
                    c + skips.pop(), cnew, attention=(i == blocks and r in attn), dropout=dropout)
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


# --- measurements -------------------------------------------------------------------------

def timed(fn, runs):
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


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
    err = None
    if "D" in inp:
        ref = torch.from_numpy(inp["D"])
        err = float((d - ref).abs().max() / ref.abs().max())
        print(f"pytorch baseline: output vs Rust tch: max |Δ| / max|D| = {err:.2e}", flush=True)
        if not err <= 1e-4:
            raise SystemExit(f"pytorch baseline: the module does not reproduce the Rust output ({err:.2e})")
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
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "max_rel_err": err,
               "forward": rows, "peak_rss_mb": peak_rss_mb()}, open(a.out, "w"), indent=1)


def cmd_train_edm(a):
    """EDM loss (SPEC §4): σ = exp(P_mean + P_std·n), weight = (σ² + σd²)/(σ·σd)², loss summed
    and scaled by 1/batch; non-finite gradients zeroed; Adam(β 0.9/0.999, ε 1e-8); EMA."""
    torch.manual_seed(0)
    net = load_net(a.weights, dropout=a.dropout).train()
    ema = EDMPrecond().eval().requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    images = torch.rand(a.batch, 3, 32, 32) * 2 - 1
    sd = 0.5

    def step():
        opt.zero_grad(set_to_none=True)
        rnd = torch.randn(a.batch, 1, 1, 1)
        sigma = (rnd * 1.2 - 1.2).exp()
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        n = torch.randn_like(images) * sigma
        d = net(images + n, sigma, torch.zeros(a.batch, 9))
        loss = weight * (d - images) ** 2
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
        print(f"pytorch baseline: EDM step {len(ts)}: {ts[-1]:.2f} s", flush=True)
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "step_s": ts,
               "peak_rss_mb": peak_rss_mb()}, open(a.out, "w"), indent=1)


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
    t = sub.add_parser("train-edm")
    t.add_argument("--weights", help="safetensors file (default: random weights)")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--dropout", type=float, default=0.13)
    t.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    {"forward": cmd_forward, "train-edm": cmd_train_edm}[a.cmd](a)


if __name__ == "__main__":
    main()
