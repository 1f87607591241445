#!/usr/bin/python3
"""Golden values for tests/nn_spec.lua and tests/optim_spec.lua, from PyTorch.

    /usr/bin/python3 tools/gen_nn_golden.py      # writes tests/golden/nn_*.safetensors

Needs python3-torch (1.13) and numpy. Writes safetensors with a tiny writer
(8-byte little-endian header length, JSON header, raw little-endian data).

nn_optim.safetensors
  p0 [3,4], p1 [4]             initial parameters
  g<s>.<i>                     gradient of parameter i at step s (1..5)
  <cfg>.<s>.<i>                parameter i after step s, for each config in CONFIGS
  <cfg>.state.<i>.<name>       optimizer state after the last step
nn_net1.safetensors   Sequential(Conv2d(2,4,3,padding=1), BatchNorm2d(4), GELU(),
                      Flatten(), Linear(100,3))
nn_net2.safetensors   Sequential(ConvTranspose2d(2,3,3,stride=2,padding=1,output_padding=1),
                      GroupNorm(1,3), SiLU(), AvgPool2d(2), Flatten(), LayerNorm(75),
                      Linear(75,3), Tanh())
  x, r                         input, and weights of the loss sum(out * r)
  sd.<name>                    the state dict before the forward
  out, loss, x.grad            train-mode forward and backward
  grad.<name>                  parameter gradients
  after.<name>                 buffers after the train-mode forward
  out_eval                     eval-mode output after that
"""
import os

import numpy as np
import torch
import torch.nn as nn

import safetensors_np  # tools/safetensors_np.py, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden")

def save(path, tensors, metadata=None):
    safetensors_np.save(path, {k: safetensors_np.as_array(v) for k, v in tensors.items()}, metadata or None)
    print("wrote", os.path.relpath(path), len(tensors), "tensors")


# the same table is written out in tests/optim_spec.lua
CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_mom": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_wd_ams": ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    "adamw_ams": ("AdamW", dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.05, amsgrad=True)),
}
STEPS = 5


def gen_optim():
    rng = np.random.default_rng(1234)
    t = {}
    p_init = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    t["p0"], t["p1"] = p_init
    grads = {}
    for s in range(1, STEPS + 1):
        for i, p in enumerate(p_init):
            g = (rng.standard_normal(p.shape) * (0.5 if s % 2 else 2.0)).astype(np.float32)
            grads[(s, i)] = g
            t["g%d.%d" % (s, i)] = g
    for cfg, (cls, kw) in CONFIGS.items():
        params = [torch.tensor(p, requires_grad=True) for p in p_init]
        opt = getattr(torch.optim, cls)(params, **kw)
        for s in range(1, STEPS + 1):
            for i, p in enumerate(params):
                p.grad = torch.tensor(grads[(s, i)])
            opt.step()
            for i, p in enumerate(params):
                t["%s.%d.%d" % (cfg, s, i)] = p.detach().clone()
        for i, p in enumerate(params):
            for k, v in opt.state[p].items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    t["%s.state.%d.%s" % (cfg, i, k)] = v.clone()
    save(os.path.join(OUT, "nn_optim.safetensors"), t)


def fixed_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") and p.dim() == 1 else 0.0))


def gen_net(fname, model, x_shape, seed):
    torch.manual_seed(seed)
    fixed_weights(model, seed)
    t = {}
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(x_shape, generator=g).requires_grad_()
    for k, v in model.state_dict().items():
        t["sd." + k] = v.clone()
    model.train()
    out = model(x)
    r = torch.randn(out.shape, generator=g)
    loss = (out * r).sum()
    loss.backward()
    t["x"], t["r"], t["out"], t["loss"] = x.detach().clone(), r, out.detach(), loss.detach().reshape(1)
    t["x.grad"] = x.grad
    for k, p in model.named_parameters():
        t["grad." + k] = p.grad
    for k, b in model.named_buffers():
        t["after." + k] = b.clone()
    model.eval()
    with torch.no_grad():
        t["out_eval"] = model(x.detach())
    save(os.path.join(OUT, fname), t)


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    gen_optim()
    net1 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.Flatten(),
                         nn.Linear(100, 3))
    gen_net("nn_net1.safetensors", net1, (3, 2, 5, 5), 10)
    net2 = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
                         nn.GroupNorm(1, 3), nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(), nn.LayerNorm(75),
                         nn.Linear(75, 3), nn.Tanh())
    gen_net("nn_net2.safetensors", net2, (2, 2, 5, 5), 20)


if __name__ == "__main__":
    main()
