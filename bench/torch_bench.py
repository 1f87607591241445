#!/usr/bin/python3
"""The Part B UNets (shared/spec/fun-with-diffusion.md) in PyTorch, mirroring
lua/fdm/unet.lua attribute for attribute so state_dict names match 1:1.

    /usr/bin/python3 bench/torch_bench.py --count
        parameter counts (the numbers recorded in tests/unet_spec.lua)
    /usr/bin/python3 bench/torch_bench.py --export [--out PATH] [--hidden 8] [--batch 4]
        random weights, inputs, train-mode outputs and gradients of the three
        models, as safetensors (default tests/golden/unet_small.safetensors)
    /usr/bin/python3 bench/torch_bench.py --bench [--iters N] [--warmup N] [--threads 2]
        images/s of a training step (forward, MSE, backward, Adam) and of a
        no-grad eval forward: UnconditionalUNet D=128 batch 256 and
        ClassConditionalUNet D=64 batch 64; one machine-readable line per
        measurement: "RESULT <config> <train|eval> <images/s> <s/iter>"

Only python3-torch (1.13, CPU) and numpy; the safetensors writer is inline.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import safetensors_np  # noqa: E402  (tools/safetensors_np.py)

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------- blocks
class Conv(nn.Module):          # Conv2d k3 s1 p1, BN, GELU
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o), nn.GELU())

    def forward(self, x):
        return self.net(x)


class DownConv(nn.Module):      # Conv2d k3 s2 p1, BN, GELU
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.GELU())

    def forward(self, x):
        return self.net(x)


class UpConv(nn.Module):        # ConvTranspose2d k4 s2 p1, BN, GELU
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(i, o, 4, 2, 1), nn.BatchNorm2d(o), nn.GELU())

    def forward(self, x):
        return self.net(x)


class Flatten(nn.Module):       # AvgPool 7 + GELU (no BN)
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(7), nn.GELU())

    def forward(self, x):
        return self.net(x)


class Unflatten(nn.Module):     # ConvTranspose2d k7 s7 p0, BN, GELU
    def __init__(self, c):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(c, c, 7, 7, 0), nn.BatchNorm2d(c), nn.GELU())

    def forward(self, x):
        return self.net(x)


class ConvBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(Conv(i, o), Conv(o, o))

    def forward(self, x):
        return self.net(x)


class DownBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(DownConv(i, o), ConvBlock(o, o))

    def forward(self, x):
        return self.net(x)


class UpBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(UpConv(i, o), ConvBlock(o, o))

    def forward(self, x):
        return self.net(x)


class FCBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(i, o), nn.GELU(), nn.Linear(o, o))

    def forward(self, x):
        return self.net(x)


# --------------------------------------------------------------- models
class UNetBody(nn.Module):
    def __init__(self, in_channels, D):
        super().__init__()
        self.in_block = ConvBlock(in_channels, D)
        self.down1 = DownBlock(D, D)
        self.down2 = DownBlock(D, 2 * D)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * D)
        self.up1 = UpBlock(4 * D, D)
        self.up2 = UpBlock(2 * D, D)
        self.out_block = ConvBlock(2 * D, D)
        self.out_conv = nn.Conv2d(D, in_channels, 3, 1, 1)

    def run(self, x, mod0=None, mod1=None):
        assert x.shape[-2:] == (28, 28), "input must be (N, C, 28, 28)"
        e0 = self.in_block(x)
        e1 = self.down1(e0)
        e2 = self.down2(e1)
        u0 = self.unflatten(self.flatten(e2))
        if mod0 is not None:
            u0 = mod0(u0)
        up1 = self.up1(torch.cat([e2, u0], 1))
        if mod1 is not None:
            up1 = mod1(up1)
        up2 = self.up2(torch.cat([e1, up1], 1))
        return self.out_conv(self.out_block(torch.cat([e0, up2], 1)))


class UnconditionalUNet(UNetBody):
    def forward(self, x):
        return self.run(x)


def _col(t):  # [N] or [N,1] -> [N,1]
    return t.reshape(-1, 1).float()


class TimeConditionalUNet(UNetBody):
    def __init__(self, in_channels, D):
        super().__init__(in_channels, D)
        self.fc1_t = FCBlock(1, 2 * D)
        self.fc2_t = FCBlock(1, D)

    def forward(self, x, t):
        t = _col(t)
        a = self.fc1_t(t)[:, :, None, None]
        b = self.fc2_t(t)[:, :, None, None]
        return self.run(x, lambda u: u * a, lambda u: u * b)


class ClassConditionalUNet(UNetBody):
    def __init__(self, in_channels, D, num_classes=10):
        super().__init__(in_channels, D)
        self.fc1_t = FCBlock(1, 2 * D)
        self.fc2_t = FCBlock(1, D)
        self.fc1_c = FCBlock(num_classes, 2 * D)
        self.fc2_c = FCBlock(num_classes, D)

    def forward(self, x, c, t, mask=None):
        c = c.float()
        if mask is not None:
            c = c * mask.reshape(-1, 1).float()
        t = _col(t)
        a_c, a_t = self.fc1_c(c)[:, :, None, None], self.fc1_t(t)[:, :, None, None]
        b_c, b_t = self.fc2_c(c)[:, :, None, None], self.fc2_t(t)[:, :, None, None]
        return self.run(x, lambda u: a_c * u + a_t, lambda u: b_c * u + b_t)


def nparams(m):
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------- safetensors
def save_safetensors(path, tensors, metadata=None):
    safetensors_np.save(path, {k: safetensors_np.as_array(v) for k, v in tensors.items()}, metadata or None)


def randomize(model, gen):
    """Non-trivial weights everywhere, BN affine and running stats included."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=gen))
                mod.running_var.copy_(1 + 0.5 * torch.rand(mod.running_var.shape, generator=gen))


def export(path, D, N):
    """For each model m in {uncond, tc, cc}: m.sd.<name> (state dict before),
    inputs m.x (and m.t, m.c, m.mask), m.r (loss = sum(out * r)), m.out (train
    mode), m.x.grad, m.grad.<param>, m.after.<buffer> (after the train forward),
    m.out_eval (eval mode, after that)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    out = {}
    specs = [("uncond", UnconditionalUNet(1, D)),
             ("tc", TimeConditionalUNet(1, D)),
             ("cc", ClassConditionalUNet(1, D, 10))]
    for tag, m in specs:
        randomize(m, gen)
        for k, v in m.state_dict().items():
            out[f"{tag}.sd.{k}"] = v.clone()
        x = torch.randn(N, 1, 28, 28, generator=gen).requires_grad_()
        args = [x]
        if tag == "tc":
            t = torch.rand(N, generator=gen)
            out[f"{tag}.t"] = t
            args.append(t)
        if tag == "cc":
            labels = torch.randint(0, 10, (N,), generator=gen)
            c = torch.nn.functional.one_hot(labels, 10).float()
            t = torch.rand(N, 1, generator=gen)
            mask = (torch.rand(N, generator=gen) > 0.3).float()
            mask[0] = 0.0
            out[f"{tag}.c"], out[f"{tag}.t"], out[f"{tag}.mask"] = c, t, mask
            args += [c, t, mask]
        out[f"{tag}.x"] = x.detach().clone()
        r = torch.randn(N, 1, 28, 28, generator=gen)
        out[f"{tag}.r"] = r
        m.train()
        y = m(*args)
        (y * r).sum().backward()
        out[f"{tag}.out"] = y
        out[f"{tag}.x.grad"] = x.grad
        for k, p in m.named_parameters():
            out[f"{tag}.grad.{k}"] = p.grad
        for k, b in m.named_buffers():
            out[f"{tag}.after.{k}"] = b.clone()
        m.eval()
        with torch.no_grad():
            out[f"{tag}.out_eval"] = m(*[a.detach() for a in args])
    # metadata values are JSON texts (tests/helpers.lua decodes each)
    meta = {k: json.dumps(v) for k, v in {"hidden": D, "batch": N, "torch": torch.__version__,
            "made_by": "/usr/bin/python3 bench/torch_bench.py --export"}.items()}
    save_safetensors(path, out, meta)
    print("wrote", os.path.relpath(path), len(out), "tensors")


# --------------------------------------------------------------- bench
CONFIGS = {
    "uncond_D128_B256": ("uncond", 128, 256),
    "cc_D64_B64": ("cc", 64, 64),
    # the 300-step CFG sampler of scripts/eval.lua (--batch 256): eval-mode
    # forwards at batch 2N = 512 (conditional and unconditional halves)
    "sampler_cc_D64_B512": ("cc", 64, 512),
    "tc_D64_B64": ("tc", 64, 64),
    "uncond_D8_B1": ("uncond", 8, 1),
    "cc_D8_B1": ("cc", 8, 1),
}


def make(kind, D):
    if kind == "uncond":
        return UnconditionalUNet(1, D)
    if kind == "tc":
        return TimeConditionalUNet(1, D)
    return ClassConditionalUNet(1, D, 10)


def inputs(kind, N):
    x = torch.randn(N, 1, 28, 28)
    if kind == "uncond":
        return [x]
    t = torch.rand(N, 1)
    if kind == "tc":
        return [x, t]
    c = torch.nn.functional.one_hot(torch.randint(0, 10, (N,)), 10).float()
    mask = (torch.rand(N) > 0.1).float()
    return [x, c, t, mask]


def bench(names, iters, warmup, modes=("train", "eval"), channels_last=False):
    for name in names:
        kind, D, N = CONFIGS[name]
        torch.manual_seed(0)
        m = make(kind, D)
        args = inputs(kind, N)
        target = torch.randn(N, 1, 28, 28)
        if channels_last:  # NHWC activations and weights (oneDNN's preferred layout)
            m = m.to(memory_format=torch.channels_last)
            args[0] = args[0].contiguous(memory_format=torch.channels_last)
            target = target.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(*args), target)
            loss.backward()
            opt.step()

        if "train" in modes:
            m.train()
            for _ in range(warmup):
                step()
            t0 = time.perf_counter()
            for _ in range(iters):
                step()
            dt = (time.perf_counter() - t0) / iters
            print(f"RESULT {name} train {N / dt:.2f} {dt:.5f}", flush=True)
        if "eval" not in modes:
            continue
        m.eval()
        with torch.no_grad():
            for _ in range(warmup):
                m(*args)
            t0 = time.perf_counter()
            for _ in range(iters):
                m(*args)
            dt = (time.perf_counter() - t0) / iters
        print(f"RESULT {name} eval {N / dt:.2f} {dt:.5f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", action="store_true")
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "golden", "unet_small.safetensors"))
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=int(os.environ.get("BENCH_ITERS", "2")))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="uncond_D128_B256,cc_D64_B64")
    ap.add_argument("--modes", default="train,eval")
    ap.add_argument("--channels-last", action="store_true", help="model and inputs in channels_last memory format")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.count:
        for kind, D in [("uncond", 128), ("tc", 64), ("cc", 64), ("uncond", 8), ("tc", 8), ("cc", 8)]:
            print(f"COUNT {kind} D={D} {nparams(make(kind, D))}")
    if a.export:
        export(a.out, a.hidden, a.batch)
    if a.bench:
        bench(a.configs.split(","), a.iters, a.warmup, a.modes.split(","), a.channels_last)
    if not (a.count or a.export or a.bench):
        ap.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
