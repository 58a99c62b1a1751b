"""PyTorch eager baseline of discriminator guidance (DG / EDM-G++) for `cargo bench --bench dg`.

DG's guided sampler re-derived from docs/SPEC.md §2–§3 and the DG description in
src/sample/dg.rs (not copied from the official sources, whose licence is non-commercial), on
the modules of `pytorch_baseline.py` (DDPM++ EDMPrecond, 32×32 ADM feature extractor,
512-channel discriminator):

* guidance `g(x, σ) = −σ²·α(τ)·∇_{x_vp} Σ log(d/(1−d))`, `x_vp = α·x`, `d` = sigmoid of the
  discriminator on the extractor's features, clipped to [1e-5, 1−1e-5]; the networks held as
  DG holds them (parameters keep requires_grad, attention recomputed in the backward);
* the EDM Heun sampler (S_churn 0) with the 1st-order term `w₁·g/t̂` added to the Euler
  derivative (w₂ = 0, no boosting): a guided step costs one network call plus one guidance
  evaluation at the Euler point and one plain call for the correction.

Measures at one batch: a plain network call (an unguided NFE), a guidance evaluation, and
whole samplers of `--steps` noise levels with and without guidance. Before timing, the
guidance and the network output on the bench's input are checked against the Rust values.

  python benches/pytorch_dg.py --weights NET.safetensors --extractor FE.safetensors \
      --discriminator DIS.safetensors --inputs IN.npz --steps 2 --runs 2 --out OUT.json
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_baseline as pb  # noqa: E402


def grad_log_ratio(fe, dis, x, sigma):
    """(g, log ratio) for images x (VE space) at per-sample σ [N]: see the module docs."""
    tau, alpha = pb.vp_time_and_scale(sigma.double())
    a = alpha.reshape(-1, 1, 1, 1)
    with torch.enable_grad():
        x_vp = (a * x.double()).float().detach().requires_grad_(True)
        t = tau.float()
        p = torch.sigmoid(dis(fe(x_vp, t, feature=True), t)).reshape(-1).clip(1e-5, 1 - 1e-5)
        lr = (p / (1 - p)).log()
        (g,) = torch.autograd.grad(lr.sum(), x_vp)
    g = (-(sigma.double() ** 2).reshape(-1, 1, 1, 1) * a * g.double()).float()
    return g.detach(), lr.detach()


def t_steps(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM's time steps (f64), with the final 0."""
    i = torch.arange(n, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


def sampler(net, latents, steps, guide=None, w1=2.0, time_min=0.01, time_max=1.0):
    """EDM's deterministic Heun sampler; with `guide` = (fe, dis) DG's 1st-order guidance in
    the τ window (batch minimum of τ), as in the module docs."""
    ts = t_steps(steps)
    n = latents.shape[0]
    x = latents.double() * ts[0]
    for i in range(steps):
        t_cur, t_next = float(ts[i]), float(ts[i + 1])
        s = torch.full([n], t_cur, dtype=torch.float64)
        with torch.no_grad():
            den = net(x.float(), s.float()).double()
        d = (x - den) / t_cur
        if guide is not None:
            tau, _ = pb.vp_time_and_scale(s)
            if time_min <= float(tau.min()) <= time_max:
                g, _ = grad_log_ratio(guide[0], guide[1], x, s)
                d = d + w1 * g.double() / t_cur
        x_next = x + (t_next - t_cur) * d
        if i < steps - 1:
            with torch.no_grad():
                den = net(x_next.float(), torch.full([n], t_next).float()).double()
            x_next = x + (t_next - t_cur) * (0.5 * d + 0.5 * (x_next - den) / t_next)
        x = x_next
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", required=True)
    p.add_argument("--extractor", required=True)
    p.add_argument("--discriminator", required=True)
    p.add_argument("--inputs", required=True, help="npz: x, sigma, latents and the Rust D, g")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    net = pb.load_net(a.weights).eval().requires_grad_(False)
    fe = pb.load_adm(pb.feature_extractor_32, a.extractor, recompute=True)
    dis = pb.load_adm(pb.discriminator_512, a.discriminator, recompute=True)
    inp = np.load(a.inputs)
    x = torch.from_numpy(inp["x"])
    sigma = torch.from_numpy(inp["sigma"])
    latents = torch.from_numpy(inp["latents"])
    with torch.no_grad():
        d = net(x, sigma)
    errs = {"D": pb.check_against_rust("DDPM++ D", d, inp["D"])}
    g, _ = grad_log_ratio(fe, dis, x, sigma)
    errs["g"] = pb.check_against_rust("DG guidance g", g, inp["g"])
    n = x.shape[0]
    with torch.no_grad():
        nfe = pb.timed(lambda: net(x, sigma), a.runs)
    guide = pb.timed(lambda: grad_log_ratio(fe, dis, x, sigma), a.runs)
    plain = pb.timed(lambda: sampler(net, latents, a.steps), max(1, a.runs - 1))
    guided = pb.timed(lambda: sampler(net, latents, a.steps, (fe, dis)), max(1, a.runs - 1))
    for what, ts in [("NFE", nfe), ("guidance", guide), ("sampler", plain), ("DG sampler", guided)]:
        print(f"pytorch dg: {what} at batch {n}: best {min(ts):.3f} s ({len(ts)} runs)", flush=True)
    pb.write_json(a.out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "max_rel_err": errs,
                          "batch": n, "steps": a.steps, "nfe_s": nfe, "guidance_s": guide,
                          "sampler_s": plain, "dg_sampler_s": guided, "peak_rss_mb": pb.peak_rss_mb()})


if __name__ == "__main__":
    main()
