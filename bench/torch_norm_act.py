#!/usr/bin/python3
"""bench/torch_norm_act.py: PyTorch's side of bench/norm_act.lua.

    /usr/bin/python3 bench/torch_norm_act.py C:MAP:N[,...]

gelu(group_norm(x, 32) * scale + shift) with per-(n, c) scale and shift,
float32 NCHW, no gradients, best of 3 after a warm-up, with
torch.set_num_threads(2). Prints one line per shape: "torch C MAP N MS".
Only python3-torch (1.13, CPU) is needed.
"""
import sys
import time

import torch
import torch.nn.functional as F


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: torch_norm_act.py C:MAP:N[,...]")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    for spec in sys.argv[1].split(","):
        c, hw, n = (int(v) for v in spec.split(":"))
        x, w, b = torch.randn(n, c, hw, hw), torch.randn(c), torch.randn(c)
        sc, sh = torch.randn(n, c, 1, 1) + 1, torch.randn(n, c, 1, 1)
        best = float("inf")
        with torch.no_grad():
            for r in range(4):
                t0 = time.perf_counter()
                F.gelu(F.group_norm(x, 32, w, b, 1e-5) * sc + sh)
                dt = time.perf_counter() - t0
                if r > 0:
                    best = min(best, dt)
        print("torch %d %d %d %.6f" % (c, hw, n, best * 1e3))


if __name__ == "__main__":
    main()
