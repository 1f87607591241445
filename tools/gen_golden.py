#!/usr/bin/python3
"""Generates the golden reference files tests/golden/ops_<group>.safetensors
used by tests/ops_spec.lua.

    /usr/bin/python3 tools/gen_golden.py          # needs torch (1.13 ok) and numpy

Every case has fixed float32 inputs drawn from a seeded torch.Generator (the
seed is derived from the case name, so adding a case never changes another).
The reference is computed in FLOAT64 from those exact float32 values and cast
to float32 once at the end, so the stored values are correctly rounded
results; the tolerances in tests/ops_spec.lua only have to cover fdm's own
float32 rounding (see the tolerance notes there).

For every case:
    <case>.in0, <case>.in1, ...   inputs, in call order (F32, I64 or BOOL)
    <case>.out                    first output
    <case>.out1, <case>.out2 ...  further outputs (max's indices, batch_norm's
                                  updated running_mean / running_var, ...)
    <case>.R                      fixed random tensor shaped like .out (only
                                  when the op is differentiable)
    <case>.grad<i>                d sum(out * R) / d in<i>, for every float
                                  input that takes a gradient
and the file's __metadata__ maps "<case>" to a JSON string with the case's
parameters ({"op": ..., plus what the call needs: dims, stride, ...}).
Index values stored in tensors (labels, max indices) are 0-based as in PyTorch.

Kinks: inputs of non-smooth ops (abs, relu, max, clamp, quantile, pooling,
maximum/minimum) are "spaced": distinct values at least 0.05 apart and at
least 0.025 from 0, so central finite differences with eps <= 1e-2 never cross
a kink and no ties exist.

gaussian_blur follows torchvision.transforms.functional.gaussian_blur
(torchvision is not needed; the same algorithm is written out below):
    kernel_size = (kx, ky) (a number means both), sigma = (sx, sy) (a number
    means both);  for each axis: half = (k - 1) / 2,
    x = linspace(-half, half, k), g = exp(-0.5 * (x / s)^2), g /= sum(g);
    kernel2d[i][j] = gy[i] * gx[j]  (rows follow y / H, columns follow x / W);
    the input [..., C, H, W] is padded by (kx//2, kx//2, ky//2, ky//2) with
    REFLECT padding (no edge repeat, as torch.nn.functional.pad 'reflect'),
    then every channel is convolved (cross-correlation; the kernel is
    symmetric) with kernel2d, output the same size as the input.

scaled_dot_product_attention (torch 1.13 has no F.scaled_dot_product_attention):
    softmax(q @ k^T / sqrt(d) [masked]) @ v, d = q.shape[-1]; a bool mask
    follows PyTorch 2's rule: True = may attend, False -> -inf before softmax.
"""
import json
import os
import sys
import zlib

import numpy as np
import torch

import safetensors_np  # tools/safetensors_np.py, beside this file
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
D = torch.float64

# ---------------------------------------------------------------- safetensors
def write_safetensors(path, tensors, metadata):
    """tensors: dict name -> numpy array (float32, int64 or bool); metadata sorted by key."""
    safetensors_np.save(path, tensors, {k: metadata[k] for k in sorted(metadata)})


# ---------------------------------------------------------------- inputs
class Gen:
    def __init__(self, name):
        self.g = torch.Generator().manual_seed(zlib.crc32(name.encode()) & 0x7FFFFFFF)

    def randn(self, *shape, scale=1.0):
        return (torch.randn(tuple(shape), generator=self.g) * scale).float()

    def rand(self, *shape, lo=0.0, hi=1.0):
        return (torch.rand(*shape, generator=self.g) * (hi - lo) + lo).float()

    def pos(self, *shape):            # away from 0, for log/sqrt/div
        return self.rand(*shape, lo=0.2, hi=2.0)

    def nonzero(self, *shape):        # |x| in [0.5, 1.5], random sign
        s = torch.where(torch.rand(*shape, generator=self.g) < 0.5, -1.0, 1.0)
        return (s * (0.5 + torch.rand(*shape, generator=self.g))).float()

    def spaced(self, *shape, gap=0.05):
        """distinct values, pairwise >= gap apart, |x| >= gap/2, shuffled"""
        n = int(np.prod(shape)) if shape else 1
        perm = torch.randperm(n, generator=self.g).double()
        v = (perm - n / 2 + 0.5) * gap
        return v.reshape(shape).float()

    def randint(self, lo, hi, *shape):
        return torch.randint(lo, hi, shape, generator=self.g, dtype=torch.int64)

    def bool(self, *shape):
        return torch.rand(*shape, generator=self.g) < 0.5

    def ints_as_float(self, lo, hi, *shape):   # small integers: comparisons get ties
        return torch.randint(lo, hi, shape, generator=self.g).float()


# ---------------------------------------------------------------- registry
GROUPS = {}


def case(group, name, fn, inputs, params=None, grad=None, diff=True):
    """fn(params, *inputs_as_float64) -> tensor or tuple of tensors.
    grad: indices of inputs that take gradients (default: all float inputs)."""
    GROUPS.setdefault(group, []).append((name, fn, inputs, params or {}, grad, diff))


def run_case(name, fn, inputs, params, grad, diff, tensors, meta):
    g = Gen(name + "/R")
    xs = []
    for i, x in enumerate(inputs):
        tensors["%s.in%d" % (name, i)] = x.numpy()
        if x.dtype == torch.float32:
            wants = diff and (grad is None or i in grad)
            xs.append(x.to(D).requires_grad_(wants))
        else:
            xs.append(x.clone())
    outs = fn(params, *xs)
    if not isinstance(outs, tuple):
        outs = (outs,)
    for k, o in enumerate(outs):
        key = "%s.out" % name if k == 0 else "%s.out%d" % (name, k)
        o = o.detach()
        if o.dtype == D:
            o = o.float()
        tensors[key] = o.numpy()
    if diff:
        out = outs[0]
        R = g.randn(*out.shape)
        tensors["%s.R" % name] = R.numpy()
        loss = (out * R.to(D)).sum()
        leaves = [x for x in xs if x.dtype == D and x.requires_grad]
        gr = torch.autograd.grad(loss, leaves, allow_unused=True)
        j = 0
        for i, x in enumerate(xs):
            if x.dtype == D and x.requires_grad:
                gi = gr[j]
                j += 1
                if gi is None:
                    gi = torch.zeros_like(x)
                tensors["%s.grad%d" % (name, i)] = gi.float().numpy()
    p = dict(params)
    p["op"] = p.get("op", name)
    meta[name] = json.dumps(p, sort_keys=True)


# ---------------------------------------------------------------- helpers used by cases
def gaussian_kernel1d(k, sigma):
    half = (k - 1) * 0.5
    x = torch.linspace(-half, half, steps=k, dtype=D)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    return pdf / pdf.sum()


def gaussian_blur(x, kernel_size, sigma):
    if isinstance(kernel_size, int):
        kernel_size = [kernel_size, kernel_size]
    if not isinstance(sigma, (list, tuple)):
        sigma = [sigma, sigma]
    kx, ky = kernel_size
    kern_x = gaussian_kernel1d(kx, sigma[0])
    kern_y = gaussian_kernel1d(ky, sigma[1])
    k2 = torch.mm(kern_y[:, None], kern_x[None, :]).to(x.dtype)
    C = x.shape[-3]
    shp = x.shape
    x4 = x.reshape(-1, C, shp[-2], shp[-1])
    k2 = k2.expand(C, 1, ky, kx)
    xp = F.pad(x4, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
    y = F.conv2d(xp, k2, groups=C)
    return y.reshape(shp)


def sdpa(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, float("-inf"))
        else:
            s = s + mask
    return torch.softmax(s, dim=-1) @ v


def d0(d):
    """Lua dims are 1-based (negative from the end); torch dims 0-based."""
    if isinstance(d, list):
        return [d0(x) for x in d]
    return d - 1 if d > 0 else d


# ================================================================ cases
def define_cases():
    # ---------------------------------------------------------- elementwise
    G = "elementwise"

    def bin_(name, f, a, b, **kw):
        case(G, name, lambda p, x, y: f(x, y), [a, b], **kw)

    g = Gen("ew")
    bin_("add", torch.add, g.randn(3, 4), g.randn(3, 4))
    bin_("add_bcast", torch.add, g.randn(3, 1, 4), g.randn(5, 4))
    bin_("add_bcast_scalar_tensor", torch.add, g.randn(2, 3), g.randn(1))
    case(G, "add_alpha", lambda p, x, y: torch.add(x, y, alpha=p["alpha"]),
         [g.randn(2, 3), g.randn(2, 3)], {"alpha": -2.5})
    case(G, "add_number", lambda p, x: x + p["s"], [g.randn(2, 3)], {"s": 1.5})
    case(G, "rsub_number", lambda p, x: p["s"] - x, [g.randn(2, 3)], {"s": 1.5})
    bin_("sub_bcast", torch.sub, g.randn(4, 1), g.randn(1, 5))
    bin_("mul_bcast", torch.mul, g.randn(2, 3, 4), g.randn(3, 1))
    case(G, "mul_number", lambda p, x: x * p["s"], [g.randn(3, 2)], {"s": -3.0})
    bin_("div_bcast", torch.div, g.randn(2, 3, 4), g.nonzero(4))
    case(G, "rdiv_number", lambda p, x: p["s"] / x, [g.nonzero(2, 3)], {"s": 2.0})
    bin_("pow_tensor", torch.pow, g.pos(3, 4), g.randn(3, 4))
    case(G, "pow_number", lambda p, x: x ** p["e"], [g.randn(3, 4)], {"e": 3.0})
    case(G, "pow_number_frac", lambda p, x: x ** p["e"], [g.pos(3, 4)], {"e": 0.5})
    bin_("maximum", torch.maximum, g.spaced(3, 4), g.spaced(3, 4, gap=0.05) + 0.025)
    bin_("minimum_bcast", torch.minimum, g.spaced(3, 4), g.spaced(4) + 0.025)
    un = {
        "neg": (torch.neg, g.randn(3, 4)),
        "abs": (torch.abs, g.spaced(3, 4)),
        "sqrt": (torch.sqrt, g.pos(3, 4)),
        "rsqrt": (torch.rsqrt, g.pos(3, 4)),
        "exp": (torch.exp, g.randn(3, 4)),
        "log": (torch.log, g.pos(3, 4)),
        "sin": (torch.sin, g.randn(3, 4, scale=2.0)),
        "cos": (torch.cos, g.randn(3, 4, scale=2.0)),
        "square": (torch.square, g.randn(3, 4)),
    }
    for n, (f, x) in un.items():
        case(G, n, (lambda f: lambda p, x: f(x))(f), [x])
    case(G, "sign", lambda p, x: torch.sign(x), [g.spaced(3, 4)], diff=False)
    case(G, "clamp", lambda p, x: torch.clamp(x, p["lo"], p["hi"]),
         [g.spaced(4, 5)], {"lo": -0.25, "hi": 0.3})
    case(G, "clamp_lo", lambda p, x: torch.clamp(x, min=p["lo"]), [g.spaced(4, 5)], {"lo": 0.1})
    case(G, "clamp_hi", lambda p, x: torch.clamp(x, max=p["hi"]), [g.spaced(4, 5)], {"hi": -0.1})
    case(G, "where", lambda p, c, x, y: torch.where(c, x, y),
         [g.bool(3, 4), g.randn(3, 4), g.randn(1, 4)])
    a, b = g.ints_as_float(-2, 3, 4, 5), g.ints_as_float(-2, 3, 4, 5)
    for n, f in [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                 ("gt", torch.gt), ("ge", torch.ge)]:
        case(G, n, (lambda f: lambda p, x, y: f(x, y))(f), [a, b], diff=False)
    case(G, "lt_bcast", lambda p, x, y: x < y, [g.ints_as_float(-2, 3, 3, 4), g.ints_as_float(-2, 3, 4)], diff=False)
    ba, bb = g.bool(3, 4), g.bool(3, 4)
    case(G, "logical_not", lambda p, x: torch.logical_not(x), [ba], diff=False)
    case(G, "logical_and", lambda p, x, y: torch.logical_and(x, y), [ba, bb], diff=False)
    case(G, "logical_or", lambda p, x, y: torch.logical_or(x, y), [ba, bb], diff=False)
    case(G, "add_int64", lambda p, x, y: x + y, [g.randint(-50, 50, 3, 4), g.randint(-50, 50, 4)], diff=False)
    case(G, "mul_int64", lambda p, x, y: x * y, [g.randint(-50, 50, 3, 4), g.randint(-50, 50, 3, 4)], diff=False)
    case(G, "add_int64_float32", lambda p, x, y: (x.to(D) + y), [g.randint(-5, 5, 3, 4), g.randn(3, 4)],
         {"promotes": "int64 + float32 -> float32"})

    # ---------------------------------------------------------- reductions
    G = "reduce"
    g = Gen("reduce")
    x = g.randn(3, 4, 5)
    case(G, "sum_all", lambda p, x: x.sum(), [x])
    case(G, "sum_dim", lambda p, x: x.sum(d0(p["dim"])), [x], {"dim": 2})
    case(G, "sum_dim_neg_keepdim", lambda p, x: x.sum(d0(p["dim"]), keepdim=True), [x], {"dim": -1, "keepdim": True})
    case(G, "sum_dims", lambda p, x: x.sum(d0(p["dim"]), keepdim=p["keepdim"]), [x], {"dim": [1, 3], "keepdim": True})
    case(G, "mean_all", lambda p, x: x.mean(), [x])
    case(G, "mean_dim", lambda p, x: x.mean(d0(p["dim"])), [x], {"dim": 3})
    case(G, "mean_dims", lambda p, x: x.mean(d0(p["dim"])), [x], {"dim": [2, 3]})
    case(G, "var_dim", lambda p, x: x.var(d0(p["dim"]), unbiased=True), [x], {"dim": 2, "unbiased": True})
    case(G, "var_dim_biased_keepdim", lambda p, x: x.var(d0(p["dim"]), unbiased=False, keepdim=True), [x],
         {"dim": -1, "unbiased": False, "keepdim": True})
    case(G, "var_dims", lambda p, x: x.var(d0(p["dim"]), unbiased=True), [x], {"dim": [1, 3], "unbiased": True})
    case(G, "std_dim", lambda p, x: x.std(d0(p["dim"]), unbiased=True), [x], {"dim": 1, "unbiased": True})
    case(G, "std_dim_biased", lambda p, x: x.std(d0(p["dim"]), unbiased=False), [x], {"dim": 3, "unbiased": False})
    s = g.spaced(3, 4, 5)
    case(G, "max_all", lambda p, x: x.max(), [s])
    case(G, "min_all", lambda p, x: x.min(), [s])
    case(G, "max_dim", lambda p, x: tuple(x.max(d0(p["dim"]))), [s], {"dim": 2})
    case(G, "max_dim_keepdim", lambda p, x: tuple(x.max(d0(p["dim"]), keepdim=True)), [s], {"dim": -1, "keepdim": True})
    case(G, "min_dim", lambda p, x: tuple(x.min(d0(p["dim"]))), [s], {"dim": 1})
    case(G, "argmax_all", lambda p, x: x.argmax(), [s], diff=False)
    case(G, "argmax_dim", lambda p, x: x.argmax(d0(p["dim"])), [s], {"dim": 3}, diff=False)
    case(G, "argmin_dim", lambda p, x: x.argmin(d0(p["dim"])), [s], {"dim": 2}, diff=False)
    s2 = g.spaced(4, 7)
    case(G, "quantile_all", lambda p, x: torch.quantile(x, p["q"]), [s2], {"q": 0.3})
    case(G, "quantile_dim", lambda p, x: torch.quantile(x, p["q"], dim=d0(p["dim"])), [s2], {"q": 0.75, "dim": 2})
    case(G, "quantile_dim_keepdim", lambda p, x: torch.quantile(x, p["q"], dim=d0(p["dim"]), keepdim=True), [s2],
         {"q": 0.5, "dim": 1, "keepdim": True})
    case(G, "norm", lambda p, x: x.norm(), [x])
    bb = g.bool(3, 4)
    case(G, "all", lambda p, x: x.all(), [bb], diff=False)
    case(G, "any", lambda p, x: x.any(), [bb], diff=False)
    case(G, "all_true", lambda p, x: x.all(), [torch.ones(2, 3, dtype=torch.bool)], diff=False)
    case(G, "any_false", lambda p, x: x.any(), [torch.zeros(2, 3, dtype=torch.bool)], diff=False)

    # ---------------------------------------------------------- views / copying
    G = "shape"
    g = Gen("shape")
    x = g.randn(2, 3, 4)
    case(G, "flip", lambda p, x: x.flip(d0(p["dims"])), [x], {"dims": [1, 3]})
    case(G, "flip_one", lambda p, x: x.flip(d0(p["dims"])), [x], {"dims": [2]})
    case(G, "roll", lambda p, x: x.roll(p["shifts"], d0(p["dims"])), [x], {"shifts": 2, "dims": 3})
    case(G, "roll_neg", lambda p, x: x.roll(p["shifts"], d0(p["dims"])), [x], {"shifts": -1, "dims": 2})
    case(G, "roll_multi", lambda p, x: x.roll(p["shifts"], d0(p["dims"])), [x], {"shifts": [1, -3], "dims": [2, 3]})
    case(G, "cat", lambda p, a, b, c: torch.cat([a, b, c], d0(p["dim"])),
         [g.randn(2, 3, 4), g.randn(2, 1, 4), g.randn(2, 2, 4)], {"dim": 2})
    case(G, "cat_last", lambda p, a, b: torch.cat([a, b], d0(p["dim"])), [g.randn(2, 3), g.randn(2, 5)], {"dim": -1})
    case(G, "stack", lambda p, a, b: torch.stack([a, b], d0(p["dim"])), [g.randn(3, 4), g.randn(3, 4)], {"dim": 1})
    case(G, "stack_mid", lambda p, a, b, c: torch.stack([a, b, c], d0(p["dim"])),
         [g.randn(3, 4), g.randn(3, 4), g.randn(3, 4)], {"dim": 2})
    case(G, "pad_last", lambda p, x: F.pad(x, p["pad"]), [x], {"pad": [1, 2], "value": 0})
    case(G, "pad_2d_value", lambda p, x: F.pad(x, p["pad"], value=p["value"]), [g.randn(1, 2, 3, 4)],
         {"pad": [2, 1, 0, 3], "value": -1.5})
    case(G, "transpose_contiguous", lambda p, x: x.transpose(d0(p["d1"]), d0(p["d2"])).contiguous(), [x],
         {"d1": 1, "d2": 3})
    case(G, "permute", lambda p, x: x.permute(*d0(p["perm"])).contiguous(), [x], {"perm": [3, 1, 2]})
    case(G, "narrow", lambda p, x: x.narrow(d0(p["dim"]), p["start"] - 1, p["len"]), [x],
         {"dim": 3, "start": 2, "len": 2})
    case(G, "slice_step", lambda p, x: x[:, :, 0:4:2], [x],
         {"dim": 3, "start": 1, "stop": 4, "step": 2, "note": "fdm slice: 1-based inclusive stop"})
    case(G, "select", lambda p, x: x.select(d0(p["dim"]), p["i"] - 1), [x], {"dim": 2, "i": 3})
    case(G, "expand_mul", lambda p, x: x.expand(*p["shape"]) * 1.0, [g.randn(3, 1)], {"shape": [2, 3, 4]})
    case(G, "view_reshape", lambda p, x: x.reshape(*p["shape"]), [x], {"shape": [4, 6]})
    case(G, "transpose_reshape", lambda p, x: x.transpose(0, 2).reshape(*p["shape"]), [x], {"shape": [-1]})
    case(G, "unsqueeze_squeeze", lambda p, x: x.unsqueeze(1).squeeze(), [g.randn(3, 1, 4)])
    case(G, "flatten", lambda p, x: x.flatten(d0(p["start"]), d0(p["stop"])), [g.randn(2, 3, 4, 5)],
         {"start": 2, "stop": 3})
    case(G, "split", lambda p, x: tuple(torch.split(x, p["size"], d0(p["dim"]))), [g.randn(5, 3)],
         {"size": 2, "dim": 1})
    case(G, "chunk", lambda p, x: tuple(torch.chunk(x, p["n"], d0(p["dim"]))), [g.randn(3, 7)], {"n": 3, "dim": 2})

    # ---------------------------------------------------------- linear algebra
    G = "linalg"
    g = Gen("linalg")
    case(G, "matmul_1d_1d", lambda p, a, b: a @ b, [g.randn(5), g.randn(5)])
    case(G, "matmul_1d_2d", lambda p, a, b: a @ b, [g.randn(5), g.randn(5, 3)])
    case(G, "matmul_2d_1d", lambda p, a, b: a @ b, [g.randn(4, 5), g.randn(5)])
    case(G, "matmul_2d_2d", lambda p, a, b: a @ b, [g.randn(4, 5), g.randn(5, 3)])
    case(G, "matmul_batched", lambda p, a, b: a @ b, [g.randn(2, 4, 5), g.randn(2, 5, 3)])
    case(G, "matmul_bcast_3d_2d", lambda p, a, b: a @ b, [g.randn(2, 4, 5), g.randn(5, 3)])
    case(G, "matmul_bcast_4d_3d", lambda p, a, b: a @ b, [g.randn(2, 1, 4, 5), g.randn(3, 5, 2)])
    case(G, "matmul_1d_3d", lambda p, a, b: a @ b, [g.randn(5), g.randn(2, 5, 3)])
    case(G, "matmul_3d_1d", lambda p, a, b: a @ b, [g.randn(2, 4, 5), g.randn(5)])
    case(G, "matmul_large_k", lambda p, a, b: a @ b, [g.randn(8, 200), g.randn(200, 6)])
    case(G, "bmm", lambda p, a, b: torch.bmm(a, b), [g.randn(3, 4, 5), g.randn(3, 5, 2)])
    case(G, "linear", lambda p, x, w, b: F.linear(x, w, b), [g.randn(4, 5), g.randn(3, 5), g.randn(3)])
    case(G, "linear_nobias", lambda p, x, w: F.linear(x, w), [g.randn(4, 5), g.randn(3, 5)])
    case(G, "linear_3d", lambda p, x, w, b: F.linear(x, w, b), [g.randn(2, 3, 5), g.randn(4, 5), g.randn(4)])
    case(G, "linear_1d", lambda p, x, w, b: F.linear(x, w, b), [g.randn(5), g.randn(4, 5), g.randn(4)])

    # ---------------------------------------------------------- conv / pool
    G = "conv"
    g = Gen("conv")

    def conv(name, x, w, b, **p):
        full = {"stride": p.get("stride", 1), "padding": p.get("padding", 0),
                "dilation": p.get("dilation", 1), "groups": p.get("groups", 1)}
        ins = [x, w] + ([b] if b is not None else [])
        case(G, name, lambda p_, x, w, b=None: F.conv2d(x, w, b, p_["stride"], p_["padding"],
                                                         p_["dilation"], p_["groups"]), ins, full)

    conv("conv2d_basic", g.randn(2, 3, 6, 6), g.randn(4, 3, 3, 3, scale=0.3), g.randn(4))
    conv("conv2d_nobias", g.randn(1, 2, 5, 5), g.randn(3, 2, 3, 3, scale=0.3), None)
    conv("conv2d_stride2_pad1", g.randn(2, 3, 7, 7), g.randn(4, 3, 3, 3, scale=0.3), g.randn(4),
         stride=2, padding=1)
    conv("conv2d_dilation2", g.randn(1, 2, 8, 8), g.randn(3, 2, 3, 3, scale=0.3), g.randn(3),
         dilation=2, padding=2)
    conv("conv2d_groups2", g.randn(2, 4, 5, 5), g.randn(6, 2, 3, 3, scale=0.3), g.randn(6),
         groups=2, padding=1)
    conv("conv2d_depthwise", g.randn(1, 3, 5, 5), g.randn(3, 1, 3, 3, scale=0.3), g.randn(3),
         groups=3, padding=1)
    conv("conv2d_rect", g.randn(1, 2, 6, 9), g.randn(3, 2, 2, 3, scale=0.3), g.randn(3),
         stride=[1, 2], padding=[1, 0], dilation=[2, 1])
    conv("conv2d_1x1", g.randn(2, 8, 4, 4), g.randn(5, 8, 1, 1, scale=0.3), g.randn(5))

    def convt(name, x, w, b, **p):
        full = {"stride": p.get("stride", 1), "padding": p.get("padding", 0),
                "output_padding": p.get("output_padding", 0), "groups": p.get("groups", 1),
                "dilation": p.get("dilation", 1)}
        ins = [x, w] + ([b] if b is not None else [])
        case(G, name, lambda p_, x, w, b=None: F.conv_transpose2d(
            x, w, b, p_["stride"], p_["padding"], p_["output_padding"], p_["groups"], p_["dilation"]), ins, full)

    convt("conv_transpose2d_basic", g.randn(2, 3, 4, 4), g.randn(3, 2, 3, 3, scale=0.3), g.randn(2))
    convt("conv_transpose2d_s2p1op1", g.randn(1, 3, 4, 4), g.randn(3, 4, 3, 3, scale=0.3), g.randn(4),
          stride=2, padding=1, output_padding=1)
    convt("conv_transpose2d_k4s2p1", g.randn(2, 2, 3, 3), g.randn(2, 3, 4, 4, scale=0.3), g.randn(3),
          stride=2, padding=1)
    convt("conv_transpose2d_groups2", g.randn(1, 4, 3, 3), g.randn(4, 3, 3, 3, scale=0.3), g.randn(6),
          stride=2, groups=2)
    convt("conv_transpose2d_nobias_dil", g.randn(1, 2, 4, 4), g.randn(2, 2, 3, 3, scale=0.3), None,
          dilation=2, padding=1)

    def pool(name, kind, x, k, **p):
        full = {"kernel": k, "stride": p.get("stride", k), "padding": p.get("padding", 0)}
        f = F.avg_pool2d if kind == "avg" else F.max_pool2d
        case(G, name, lambda p_, x: f(x, p_["kernel"], p_["stride"], p_["padding"]), [x], full)

    pool("avg_pool2d_k2", "avg", g.randn(2, 3, 6, 6), 2)
    pool("avg_pool2d_k3s2p1", "avg", g.randn(1, 2, 7, 7), 3, stride=2, padding=1)
    pool("avg_pool2d_rect", "avg", g.randn(1, 2, 6, 8), [2, 4], stride=[2, 2])
    pool("max_pool2d_k2", "max", g.spaced(2, 3, 6, 6, gap=0.05), 2)
    pool("max_pool2d_k3s2p1", "max", g.spaced(1, 2, 7, 7, gap=0.05), 3, stride=2, padding=1)
    pool("max_pool2d_k3s1", "max", g.spaced(1, 1, 5, 5, gap=0.05), 3, stride=1)

    # ---------------------------------------------------------- interpolate
    G = "interp"
    g = Gen("interp")

    def interp(name, x, **p):
        def f(p_, x):
            kw = {"mode": p_["mode"]}
            if "size" in p_:
                kw["size"] = p_["size"]
            else:
                kw["scale_factor"] = p_["scale_factor"]
            if p_["mode"] == "bilinear":
                kw["align_corners"] = p_["align_corners"]
            return F.interpolate(x, **kw)
        case(G, name, f, [x], p)

    interp("nearest_up2_scale", g.randn(1, 2, 3, 4), mode="nearest", scale_factor=2)
    interp("nearest_up_size", g.randn(1, 2, 3, 4), mode="nearest", size=[5, 7])
    interp("nearest_down_size", g.randn(1, 2, 8, 6), mode="nearest", size=[3, 4])
    interp("nearest_down_half", g.randn(1, 2, 8, 6), mode="nearest", scale_factor=0.5)
    for ac in (False, True):
        t = "ac" if ac else "noac"
        interp("bilinear_up2_%s" % t, g.randn(1, 2, 3, 4), mode="bilinear", scale_factor=2, align_corners=ac)
        interp("bilinear_up_size_%s" % t, g.randn(2, 1, 3, 4), mode="bilinear", size=[5, 7], align_corners=ac)
        interp("bilinear_down_size_%s" % t, g.randn(1, 2, 8, 6), mode="bilinear", size=[3, 4], align_corners=ac)
        interp("bilinear_down_half_%s" % t, g.randn(1, 2, 8, 6), mode="bilinear", scale_factor=0.5,
               align_corners=ac)

    # ---------------------------------------------------------- normalization
    G = "norm"
    g = Gen("norm")

    def bn(name, x, affine, training, momentum=0.1, eps=1e-5):
        C = x.shape[1]
        rm = g.randn(C, scale=0.5)
        rv = g.rand(C, lo=0.5, hi=1.5)
        ins = [x, rm, rv]
        if affine:
            ins += [g.randn(C), g.randn(C)]

        def f(p, x, rm, rv, w=None, b=None):
            rm, rv = rm.clone(), rv.clone()
            y = F.batch_norm(x, rm, rv, w, b, p["training"], p["momentum"], p["eps"])
            return (y, rm, rv)
        # running stats never take gradients
        grad = [0, 3, 4]
        case(G, name, f, ins, {"training": training, "momentum": momentum, "eps": eps, "affine": affine},
             grad=grad)

    bn("batch_norm_train", g.randn(4, 3, 3, 3, scale=2.0) + 1.0, True, True)
    bn("batch_norm_train_2d", g.randn(6, 4), True, True, momentum=0.2, eps=1e-3)
    bn("batch_norm_train_noaffine", g.randn(3, 2, 4, 4), False, True)
    bn("batch_norm_eval", g.randn(2, 3, 4, 4), True, False)
    bn("batch_norm_eval_noaffine", g.randn(2, 3, 4, 4), False, False)

    def gn(name, x, G_, affine, eps=1e-5):
        C = x.shape[1]
        ins = [x] + ([g.randn(C), g.randn(C)] if affine else [])
        case("norm", name, lambda p, x, w=None, b=None: F.group_norm(x, p["groups"], w, b, p["eps"]), ins,
             {"groups": G_, "eps": eps, "affine": affine})

    gn("group_norm", g.randn(2, 6, 3, 3, scale=2.0) + 0.5, 3, True)
    gn("group_norm_g1", g.randn(2, 4, 3, 3), 1, True)
    gn("group_norm_noaffine", g.randn(2, 4, 2, 5), 2, False, eps=1e-3)

    def ln(name, x, nshape, affine, eps=1e-5):
        ins = [x] + ([g.randn(*nshape), g.randn(*nshape)] if affine else [])
        case("norm", name, lambda p, x, w=None, b=None: F.layer_norm(x, p["normalized_shape"], w, b, p["eps"]),
             ins, {"normalized_shape": nshape, "eps": eps, "affine": affine})

    ln("layer_norm", g.randn(3, 8, scale=2.0) + 1.0, [8], True)
    ln("layer_norm_2dims", g.randn(2, 3, 4, 5), [4, 5], True)
    ln("layer_norm_noaffine", g.randn(4, 6), [6], False, eps=1e-3)

    # act(group_norm(x) * scale + shift), scale/shift per (n, c); two outputs, both the reference: fdm's
    # second one is the fused kernel's (run without gradients), its first the composite's
    def gna(name, x, G_, act, scale_shape=None, shift_shape=None):
        N, C = x.shape[0], x.shape[1]
        ins = [x, g.randn(C), g.randn(C)]
        if scale_shape:
            ins.append(1.0 + 0.5 * g.randn(*scale_shape))
        if shift_shape:
            ins.append(g.randn(*shift_shape))

        def f(p, x, w, b, *rest):
            h = F.group_norm(x, p["groups"], w, b, 1e-5)
            bc = [N, C] + [1] * (x.dim() - 2)
            rest = list(rest)
            if p["scale"]:
                h = h * rest.pop(0).reshape(bc)
            if p["shift"]:
                h = h + rest.pop(0).reshape(bc)
            h = {"gelu": F.gelu, "silu": F.silu, "none": lambda t: t}[p["act"]](h)
            return (h, h)
        case("norm", name, f, ins, {"groups": G_, "act": act, "scale": bool(scale_shape), "shift": bool(shift_shape)})

    gna("group_norm_act_gelu_scale_shift", g.randn(2, 6, 4, 5, scale=2.0) + 0.5, 3, "gelu", [2, 6, 1, 1], [2, 6])
    gna("group_norm_act_silu", g.randn(2, 4, 3, 3), 2, "silu")
    gna("group_norm_act_scale_3d", g.randn(3, 4, 6), 4, "none", [3, 4])

    # ---------------------------------------------------------- activations
    G = "act"
    g = Gen("act")
    x = g.randn(4, 6, scale=2.0)
    case(G, "gelu", lambda p, x: F.gelu(x), [x])
    case(G, "gelu_tanh", lambda p, x: F.gelu(x, approximate="tanh"), [x], {"approximate": "tanh"})
    case(G, "silu", lambda p, x: F.silu(x), [x])
    case(G, "relu", lambda p, x: F.relu(x), [g.spaced(4, 6)])
    case(G, "sigmoid", lambda p, x: torch.sigmoid(x), [x])
    case(G, "tanh", lambda p, x: torch.tanh(x), [x])
    x3 = g.randn(2, 3, 5, scale=2.0)
    case(G, "softmax_last", lambda p, x: F.softmax(x, d0(p["dim"])), [x3], {"dim": -1})
    case(G, "softmax_mid", lambda p, x: F.softmax(x, d0(p["dim"])), [x3], {"dim": 2})
    case(G, "softmax_large", lambda p, x: F.softmax(x, d0(p["dim"])), [g.randn(2, 6) * 30 + 50], {"dim": 2})
    case(G, "log_softmax_last", lambda p, x: F.log_softmax(x, d0(p["dim"])), [x3], {"dim": -1})
    case(G, "log_softmax_first", lambda p, x: F.log_softmax(x, d0(p["dim"])), [x3], {"dim": 1})
    case(G, "dropout_eval", lambda p, x: F.dropout(x, p["p"], p["training"]), [x], {"p": 0.5, "training": False})

    # ---------------------------------------------------------- losses / misc
    G = "misc"
    g = Gen("misc")
    a, b = g.randn(3, 4), g.randn(3, 4)
    for red in ("mean", "sum", "none"):
        case(G, "mse_loss_" + red, lambda p, a, b: F.mse_loss(a, b, reduction=p["reduction"]), [a, b],
             {"reduction": red})
    logits, labels = g.randn(5, 4, scale=2.0), g.randint(0, 4, 5)
    for red in ("mean", "sum", "none"):
        case(G, "cross_entropy_" + red, lambda p, x, y: F.cross_entropy(x, y, reduction=p["reduction"]),
             [logits, labels], {"reduction": red})
    case(G, "one_hot", lambda p, y: F.one_hot(y, p["n"]), [g.randint(0, 5, 6)], {"n": 5}, diff=False)
    case(G, "one_hot_2d", lambda p, y: F.one_hot(y, p["n"]), [g.randint(0, 3, 2, 3)], {"n": 4}, diff=False)
    case(G, "gaussian_blur_k5", lambda p, x: gaussian_blur(x, p["kernel_size"], p["sigma"]),
         [g.randn(1, 2, 7, 8)], {"kernel_size": 5, "sigma": 1.5})
    case(G, "gaussian_blur_rect", lambda p, x: gaussian_blur(x, p["kernel_size"], p["sigma"]),
         [g.randn(2, 3, 6, 9)], {"kernel_size": [5, 3], "sigma": [2.0, 0.8],
                                 "note": "kernel_size/sigma = {x (W), y (H)} as torchvision"})
    case(G, "gaussian_blur_3d_input", lambda p, x: gaussian_blur(x, p["kernel_size"], p["sigma"]),
         [g.randn(3, 5, 5)], {"kernel_size": 3, "sigma": 1.0})
    q, k, v = g.randn(2, 3, 4, 8), g.randn(2, 3, 5, 8), g.randn(2, 3, 5, 6)
    case(G, "sdpa", lambda p, q, k, v: sdpa(q, k, v), [q, k, v])
    case(G, "sdpa_3d", lambda p, q, k, v: sdpa(q, k, v), [g.randn(2, 4, 8), g.randn(2, 4, 8), g.randn(2, 4, 8)])
    mask = g.bool(4, 5)
    mask[:, 0] = True      # every row can attend somewhere
    case(G, "sdpa_bool_mask", lambda p, q, k, v, m: sdpa(q, k, v, m), [q, k, v, mask],
         {"mask": "bool, True = attend"})
    case(G, "sdpa_float_mask", lambda p, q, k, v, m: sdpa(q, k, v, m), [q, k, v, g.randn(4, 5)],
         {"mask": "float, added to the scores"}, grad=[0, 1, 2])


def main():
    torch.set_grad_enabled(True)
    define_cases()
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for group, cases in GROUPS.items():
        tensors, meta = {}, {}
        for (name, fn, inputs, params, grad, diff) in cases:
            run_case(name, fn, inputs, params, grad, diff, tensors, meta)
        meta["__generator__"] = json.dumps({"tool": "tools/gen_golden.py", "torch": torch.__version__,
                                            "compute": "float64 from float32 inputs, cast to float32"})
        path = os.path.join(OUT_DIR, "ops_%s.safetensors" % group)
        write_safetensors(path, tensors, meta)
        sz = os.path.getsize(path)
        total += sz
        print("%-45s %4d cases %8d bytes" % (os.path.relpath(path), len(cases), sz))
    print("total %d bytes" % total)
    if total > 3 * 1024 * 1024:
        sys.exit("golden files exceed 3 MB")


if __name__ == "__main__":
    main()
