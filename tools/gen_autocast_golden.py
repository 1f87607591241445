#!/usr/bin/python3
"""Golden values for tests/autocast_spec.lua, from PyTorch's CPU autocast.

    /usr/bin/python3 tools/gen_autocast_golden.py   # writes tests/golden/autocast_bf16.safetensors

Needs python3-torch (1.13) and numpy. For each case <c> (the table CASES):

  <c>.x, <c>.w, <c>.b, <c>.gy    float32 inputs, weight, bias (bf16-exact, see
                                 below) and the output gradient given to backward
  <c>.out, <c>.gx, <c>.gw        under torch.autocast("cpu", dtype=torch.bfloat16):
                                 the output and the input/weight gradients (bf16
                                 results, stored as float32); gx/gw only where they
                                 are bf16(ref_gx/ref_gw) to one bf16 ulp: torch
                                 1.13's CPU bf16 GEMM backward (linear, matmul)
                                 is not a float32-accumulated product (the script
                                 prints by how much), so those are left out;
                                 nor is its bf16 bmm: its "out" is kept, and the
                                 metadata <c>.out gives its largest difference
                                 from ref as a share of ref's largest element
  <c>.ref, <c>.ref_gx, <c>.ref_gw  the same op in float32 on operands rounded to
                                 bfloat16 (x, w; gy for the gradients): what fdm
                                 computes under autocast, up to summation order

conv_transpose2d is not on torch 1.13's CPU autocast list (its CUDA autocast
has it) and 1.13 cannot run it on bf16 CPU tensors ("slow_conv_transpose2d_out_cpu"
not implemented for 'BFloat16'): its out/gx/gw are bf16(ref/ref_gx/ref_gw), which
is what every listed op gives here (the script prints the share of identical
elements: 100% for conv2d, linear and matmul with torch 1.13).

PyTorch's autocast returns bfloat16 tensors, so out = bf16(ref) up to
summation order; this script checks that (every element within one bf16 ulp).
PyTorch also casts the bias to bf16; fdm adds a float32 bias, so the biases
are drawn bf16-exact and the two agree. "matmul" has no weight: w is the second
operand, b is absent.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

import safetensors_np  # tools/safetensors_np.py, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "autocast_bf16.safetensors")

# name: (op, x shape, w shape, bias?, keyword arguments); the same table is in tests/autocast_spec.lua
CASES = {
    "conv": ("conv2d", (2, 5, 7, 6), (4, 5, 3, 3), True, dict(padding=1)),
    "conv_wino": ("conv2d", (2, 8, 9, 9), (8, 8, 3, 3), True, dict(padding=1)),   # the CPU's Winograd path
    "conv_s2g2": ("conv2d", (2, 6, 9, 8), (4, 3, 3, 2), True, dict(stride=2, padding=(1, 0), groups=2)),
    "convt": ("conv_transpose2d", (2, 6, 5, 5), (6, 3, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    "linear": ("linear", (3, 4, 37), (9, 37), True, {}),
    "matmul": ("matmul", (2, 3, 5, 33), (33, 7), False, {}),
    "bmm": ("matmul", (4, 6, 21), (4, 21, 5), False, {}),
}


def bf16(t):
    return t.bfloat16().float()


def run(op, x, w, b, kw):
    if op == "matmul":
        return torch.matmul(x, w)
    return getattr(F, op)(x, w, b, **kw)


def main():
    torch.manual_seed(20261127)
    t = {}
    # metadata values are JSON (tests/helpers.lua decodes them)
    meta = {"torch": json.dumps(torch.__version__), "generator": json.dumps("tools/gen_autocast_golden.py")}
    for name, (op, xs, ws, has_b, kw) in CASES.items():
        x = torch.randn(*xs)
        w = torch.randn(*ws) * 0.5
        b = bf16(torch.randn(ws[1] if op == "conv_transpose2d" else ws[0])) if has_b else None
        # autocast: outputs and gradients as PyTorch computes them
        xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(op, xa, wa, b, kw)
        listed = out.dtype == torch.bfloat16
        gy = torch.randn(out.shape)
        if listed:
            out.backward(gy)
        # float32 on rounded operands
        xr, wr = bf16(x).requires_grad_(), bf16(w).requires_grad_()
        ref = run(op, xr, wr, b, kw)
        ref.backward(bf16(gy))
        if not listed:
            # not on this PyTorch's CPU autocast list (1.13: conv_transpose2d, which its CUDA autocast
            # lists), and 1.13 cannot run it on bf16 tensors on the CPU either: autocast's bf16 results
            # are the rounded float32 ones (as every listed case below checks)
            print("%-10s %s: not autocast by torch %s on the CPU; out, gx, gw = bf16(ref, ref_gx, ref_gw)"
                  % (name, op, torch.__version__))
            out, xa.grad, wa.grad = ref.detach().bfloat16(), bf16(xr.grad), bf16(wr.grad)
        t.update({name + ".x": x, name + ".w": w, name + ".gy": gy, name + ".ref": ref.detach(),
                  name + ".ref_gx": xr.grad, name + ".ref_gw": wr.grad})
        if b is not None:
            t[name + ".b"] = b
        for what, got, want in (("out", out.float(), ref), ("gx", xa.grad, xr.grad), ("gw", wa.grad, wr.grad)):
            ulp = want.abs().clamp(min=1e-30) * 2.0 ** -7   # one bf16 ulp (8 significant bits) or more
            bad = ((got - want).abs() > ulp).sum().item()
            same = (got == bf16(want)).float().mean().item()
            print("%-10s %-3s within one bf16 ulp of the rounded-operand float32 result: %s; identical after "
                  "rounding: %.1f%%; largest difference %.2g of the largest element"
                  % (name, what, "all" if bad == 0 else "%d NOT" % bad, 100 * same,
                     ((got - want).abs().max() / want.abs().max()).item()))
            if bad == 0:
                t[name + "." + what] = got
            elif what == "out":
                # torch 1.13's CPU bf16 bmm is not a float32-accumulated product either: kept, marked
                assert op == "matmul", (name, what)
                t[name + ".out"] = got
                meta[name + ".out"] = "%.3g" % ((got - want).abs().max() / want.abs().max()).item()
            else:
                # torch 1.13's CPU bf16 GEMM backward (linear, bmm) does not compute a float32-accumulated
                # product of the rounded operands; those gradients are left out (fdm is tested against ref_*)
                assert op in ("linear", "matmul"), (name, what)
    safetensors_np.save(OUT, {k: safetensors_np.as_array(v) for k, v in t.items()},
                        meta)
    print("wrote", os.path.relpath(OUT), len(t), "tensors")


if __name__ == "__main__":
    main()
