"""Reference initialisations from real PyTorch for tests/models_init.rs.

Draws, after torch.manual_seed(1234), in this order: torch.nn.Linear(5, 7), Conv2d(3, 4, 3),
Conv1d(6, 18, 1) (PyTorch defaults), AttentionPool2d-style randn/sqrt(C), Embedding(10, 32),
then EDM's weight_init formulas (restated from SPEC §2.1: uniform modes (rand*2-1)*k, normal
modes randn*k, times init_weight / init_bias), FourierEmbedding 16*randn, a zero_module'd
Conv2d (drawn, then zeroed) and one more randn to prove the stream advanced. Writes an npz.
"""
import sys

import numpy as np
import torch

torch.manual_seed(1234)
out = {}
lin = torch.nn.Linear(5, 7)
out["torch_linear.weight"], out["torch_linear.bias"] = lin.weight, lin.bias
conv = torch.nn.Conv2d(3, 4, 3)
out["torch_conv.weight"], out["torch_conv.bias"] = conv.weight, conv.bias
c1 = torch.nn.Conv1d(6, 18, 1)
out["torch_conv1d.weight"], out["torch_conv1d.bias"] = c1.weight, c1.bias
out["pos_emb"] = torch.randn(64, 17) / 64 ** 0.5
out["embedding"] = torch.nn.Embedding(10, 32).weight


def weight_init(shape, mode, fan_in, fan_out):
    if mode == "xavier_uniform":
        return np.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return np.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return np.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(mode)


out["edm_xu.weight"] = weight_init([32, 16, 3, 3], "xavier_uniform", 144, 288) * np.sqrt(0.2)
out["edm_xu.bias"] = weight_init([32], "xavier_uniform", 144, 288) * 0
out["edm_xn.weight"] = weight_init([24, 40], "xavier_normal", 40, 24) * 1
out["edm_ku.weight"] = weight_init([24, 40], "kaiming_uniform", 40, 24) * np.sqrt(1 / 3)
out["edm_ku.bias"] = weight_init([24], "kaiming_uniform", 40, 24) * np.sqrt(1 / 3)
out["edm_kn.weight"] = weight_init([24, 40], "kaiming_normal", 40, 24) * 1
out["fourier"] = torch.randn(8) * 16
z = torch.nn.Conv2d(5, 5, 3)
for p in z.parameters():
    p.detach().zero_()
out["zeroed.weight"], out["zeroed.bias"] = z.weight, z.bias
out["after_zeroed"] = torch.randn(6)
np.savez(sys.argv[1], **{k: v.detach().numpy() for k, v in out.items()})
print("wrote", len(out), "arrays")
