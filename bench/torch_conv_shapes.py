#!/usr/bin/python3
"""bench/torch_conv_shapes.py: PyTorch's side of bench/conv_shapes.lua.

    /usr/bin/python3 bench/torch_conv_shapes.py C:MAP:N[,...] [back]

The same 3x3 stride-1 padding-1 convolutions (C = K, float32, NCHW), timed
the same way (best of 3 after a warm-up, repetitions sized to ~2 GFLOP),
with torch.set_num_threads(2). Prints one line per shape:
"torch C MAP N MS". Only python3-torch (1.13, CPU) is needed.
"""
import sys
import time

import torch


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: torch_conv_shapes.py C:MAP:N[,...] [back]")
    back = len(sys.argv) > 2 and sys.argv[2] == "back"
    torch.set_num_threads(2)
    torch.manual_seed(0)
    for spec in sys.argv[1].split(","):
        c, hw, n = (int(v) for v in spec.split(":"))
        x = torch.randn(n, c, hw, hw, requires_grad=back)
        w = torch.randn(c, c, 3, 3) * 0.01
        b = torch.zeros(c)
        reps = max(1, int(2e9 / (2 * n * c * c * 9 * hw * hw)))
        best = float("inf")
        for r in range(4):
            t0 = time.perf_counter()
            for _ in range(reps):
                if back:
                    torch.nn.functional.conv2d(x, w, b, padding=1).sum().backward()
                else:
                    with torch.no_grad():
                        torch.nn.functional.conv2d(x, w, b, padding=1)
            dt = (time.perf_counter() - t0) / reps
            if r > 0:
                best = min(best, dt)
        print("torch %d %d %d %.6f" % (c, hw, n, best * 1e3))


if __name__ == "__main__":
    main()
