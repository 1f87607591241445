#!/usr/bin/env python3
"""PyTorch's half of `make bench-gpu` (bench/gpu_bench.lua runs it after fdm's
half, on the same GPU in the same run): the Part B UNets of
bench/torch_bench.py on CUDA, in eager mode, under torch.compile
(reduce-overhead and max-autotune, each in its own process with a time
limit: compiling can take minutes) and in eager mode under bf16 autocast.
Order: eager, reduce-overhead (stopped 40 s before the budget ends, for the
bf16 row), eager bf16, max-autotune with what is left: give --budget 400 or
more (BENCH_GPU_BUDGET for make bench-gpu) for max-autotune to finish.

    python3 bench/torch_gpu_bench.py [--tf32 1] [--budget S] [--modes ...]

Workloads (the same as gpu_bench.lua's, with the same sizes):
  uncond_train  UnconditionalUNet D=128, one training step of batch 256
                (forward, MSE, backward, Adam)
  cc_train      ClassConditionalUNet D=64, one training step of batch 64
  cc_epoch      a whole epoch of the class-conditioned flow-matching recipe:
                938 steps of batch 64 (interpolation x_t, class dropout 0.1,
                MSE to x1 - x0, Adam) over random MNIST-shaped data held on
                the GPU (MNIST itself is not on the GPU machine)
  cfg_sample    the 300-step Euler CFG sampler (guidance 5) for 1,000 digits:
                300 eval forwards of batch 2,000 (conditional + unconditional)
A workload that would outrun its time box is timed over the steps that fit
and extrapolated (the RESULT line says so).

Output, one line per measurement:
  RESULT <workload> <impl> <images/s> <seconds> <note>
with impl eager, eager_bf16, compile:reduce-overhead, compile:max-autotune;
DEVICE <name> once; anything else is commentary. Without a CUDA device it
says why and exits 0.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

WORKLOADS = ["cc_train", "uncond_train", "cc_epoch", "cfg_sample"]
DEVICE = "cuda"   # --device cpu: a smoke test of this script on a machine without a GPU


def log(*a):
    print(*a, flush=True)


def sync():
    import torch
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Box:
    """the time box of one workload: seconds of timed work, then extrapolate"""

    def __init__(self, seconds):
        self.seconds = seconds


def sizes(tiny):
    if tiny:
        return dict(uncond=(8, 4), cc=(8, 4), epoch_steps=5, epoch_batch=4, digits=10, sample_steps=3, data=64)
    return dict(uncond=(128, 256), cc=(64, 64), epoch_steps=938, epoch_batch=64, digits=1000, sample_steps=300,
                data=60000)


def build(kind, D):
    import torch
    sys.path.insert(0, HERE)
    from torch_bench import ClassConditionalUNet, UnconditionalUNet
    torch.manual_seed(0)
    m = UnconditionalUNet(1, D) if kind == "uncond" else ClassConditionalUNet(1, D, 10)
    return m.to(DEVICE)


def wrap(m, mode):
    import torch
    return torch.compile(m, mode=mode) if mode else m


def mark_step(mode):
    """a new iteration for CUDA graphs (reduce-overhead and max-autotune both use them)"""
    import torch
    if mode and DEVICE == "cuda":
        torch.compiler.cudagraph_mark_step_begin()


def autocast(bf16):
    import torch
    return torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16)


def timed_steps(step, total, box, warmup=3):
    """runs warm-up steps, then up to `total` timed steps within the box;
    returns (seconds for all `total` steps, steps timed)"""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    done = 0
    while done < total:
        step()
        done += 1
        if done % 8 == 0 or done == total:
            sync()
            if time.perf_counter() - t0 > box.seconds:
                break
    sync()
    dt = time.perf_counter() - t0
    return dt * total / done, done


def run_train(kind, S, mode, bf16, box):
    import torch
    import torch.nn.functional as F
    D, N = S[kind]
    m = build(kind, D).train()
    fwd = wrap(m, mode)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    x = torch.randn(N, 1, 28, 28, device=DEVICE)
    target = torch.randn(N, 1, 28, 28, device=DEVICE)
    args = [x]
    if kind == "cc":
        c = F.one_hot(torch.randint(0, 10, (N,), device=DEVICE), 10).float()
        t = torch.rand(N, 1, device=DEVICE)
        mask = (torch.rand(N, device=DEVICE) >= 0.1).float()
        args += [c, t, mask]

    def step():
        mark_step(mode)
        opt.zero_grad(set_to_none=True)
        with autocast(bf16):
            out = fwd(*args)
        loss = F.mse_loss(out.float(), target)
        loss.backward()
        opt.step()

    steps = 20
    sec, done = timed_steps(step, steps, box)
    per = sec / steps
    return N / per, per, "s/step, %d steps timed" % done


def run_epoch(S, mode, bf16, box):
    import torch
    import torch.nn.functional as F
    D, _ = S["cc"]
    N, steps = S["epoch_batch"], S["epoch_steps"]
    m = build("cc", D).train()
    fwd = wrap(m, mode)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    n = S["data"]
    data = torch.rand(n, 1, 28, 28, device=DEVICE)
    labels = torch.randint(0, 10, (n,), device=DEVICE)
    perm = torch.cat([torch.randperm(n, device=DEVICE), torch.randperm(n, device=DEVICE)])
    state = {"i": 0}

    def step():
        i = state["i"] % steps
        state["i"] += 1
        idx = perm[i * N:(i + 1) * N]
        x1, lab = data[idx], labels[idx]
        c = F.one_hot(lab, 10).float()
        x0 = torch.randn_like(x1)
        t = torch.rand(N, device=DEVICE)
        tt = t.reshape(N, 1, 1, 1)
        xt = x0 * (1 - tt) + x1 * tt
        mask = (torch.rand(N, device=DEVICE) >= 0.1).float()
        mark_step(mode)
        opt.zero_grad(set_to_none=True)
        with autocast(bf16):
            out = fwd(xt, c, t, mask)
        loss = F.mse_loss(out.float(), x1 - x0)
        loss.backward()
        opt.step()

    sec, done = timed_steps(step, steps, box)
    note = "s/epoch of %d steps" % steps + ("" if done == steps else ", extrapolated from %d steps" % done)
    return steps * N / sec, sec, note


def run_sample(S, mode, bf16, box):
    import torch
    import torch.nn.functional as F
    D, _ = S["cc"]
    n, steps, g = S["digits"], S["sample_steps"], 5.0
    m = build("cc", D).eval()
    fwd = wrap(m, mode)
    labels = torch.arange(n, device=DEVICE) % 10
    c = F.one_hot(labels, 10).float()
    cc = torch.cat([c, torch.zeros_like(c)], 0)
    state = {}

    def reset():
        state["x"] = torch.randn(n, 1, 28, 28, device=DEVICE)
        state["i"] = 0

    def step():
        if state["i"] >= steps:
            reset()
        x, i = state["x"], state["i"]
        t = torch.full((2 * n,), i / steps, device=DEVICE)
        mark_step(mode)
        with torch.no_grad(), autocast(bf16):
            u = fwd(torch.cat([x, x], 0), cc, t).float()
        uc, uu = u[:n], u[n:]
        state["x"] = x + (uu + (uc - uu) * g) * (1.0 / steps)
        state["i"] = i + 1

    reset()
    sec, done = timed_steps(step, steps, box)
    note = "s for %d digits x %d steps" % (n, steps) + ("" if done == steps else ", extrapolated from %d steps" % done)
    return n / sec, sec, note


def run_workload(w, S, mode, bf16, box):
    if w == "uncond_train":
        return run_train("uncond", S, mode, bf16, box)
    if w == "cc_train":
        return run_train("cc", S, mode, bf16, box)
    if w == "cc_epoch":
        return run_epoch(S, mode, bf16, box)
    return run_sample(S, mode, bf16, box)


def run_impl(impl, mode, bf16, args, S):
    import torch
    for w in args.workloads.split(","):
        try:
            t0 = time.perf_counter()
            box = Box(args.long_box if w in ("cc_epoch", "cfg_sample") else args.box)
            ips, sec, note = run_workload(w, S, mode, bf16, box)
            log("RESULT %s %s %.6g %.6g %s (%.0f s incl. warm-up/compile)" % (
                w, impl, ips, sec, note.replace(" ", "_"), time.perf_counter() - t0))
        except Exception as e:  # one failing workload must not hide the others
            log("FAILED %s %s %s: %s" % (w, impl, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else ""))
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def setup(args):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = args.cudnn_benchmark


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tf32", type=int, default=1, help="TF32 matmuls and convolutions (1) or strict fp32 (0)")
    ap.add_argument("--cudnn-benchmark", type=int, default=1)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for everything (compile included)")
    ap.add_argument("--box", type=float, default=4.0, help="seconds of timed work per train-step workload")
    ap.add_argument("--long-box", type=float, default=20.0, help="seconds of timed work for the epoch and the sampler")
    ap.add_argument("--modes", default="eager,eager_bf16,reduce-overhead,max-autotune")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--compile-workloads", default="",
                    help="the workloads the torch.compile modes run (default: --workloads); compiling each takes a while")
    ap.add_argument("--tiny", type=int, default=0, help="tiny sizes (a smoke test of the script)")
    ap.add_argument("--child", default="", help="(internal) run one torch.compile mode")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script (tiny sizes advised)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    args.tf32 = bool(args.tf32)
    args.cudnn_benchmark = bool(args.cudnn_benchmark)
    try:
        import torch
    except ImportError as e:
        log("PyTorch: cannot import torch (%s); skipped" % e)
        return 0
    if DEVICE == "cuda" and not torch.cuda.is_available():
        log("PyTorch %s: no CUDA device; skipped" % torch.__version__)
        return 0
    setup(args)
    S = sizes(args.tiny)
    if args.child:
        run_impl("compile:" + args.child, args.child, False, args, S)
        return 0
    log("DEVICE %s" % (torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE))
    log("PyTorch %s, CUDA %s, cuDNN %s; TF32 %s, cudnn.benchmark %s" % (
        torch.__version__, torch.version.cuda, torch.backends.cudnn.version(), args.tf32, args.cudnn_benchmark))
    deadline = time.perf_counter() + args.budget
    modes = args.modes.split(",")

    def compiled(mode, reserve):
        """one torch.compile mode in a child process, cut off `reserve` s before the deadline"""
        left = deadline - reserve - time.perf_counter()
        if left < 20:
            log("SKIPPED compile:%s time box (%.0f s left of --budget %.0f)" % (mode, max(left, 0), args.budget))
            return
        cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--tf32", str(int(args.tf32)),
               "--cudnn-benchmark", str(int(args.cudnn_benchmark)), "--box", str(args.box),
               "--long-box", str(args.long_box),
               "--workloads", args.compile_workloads or args.workloads, "--tiny", str(args.tiny), "--device", DEVICE]
        # killed at its time limit: what it printed before stands
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            out += "\nTIMEOUT compile:%s after %.0f s (--budget)\n" % (mode, left)
        for line in out.splitlines():
            if line.startswith(("RESULT", "FAILED", "TIMEOUT")):
                log(line)

    # the main comparisons first: eager, then reduce-overhead (compiles faster than
    # max-autotune) leaving time for the bf16 row, then max-autotune with the rest
    if "eager" in modes:
        run_impl("eager", None, False, args, S)
    if "reduce-overhead" in modes:
        compiled("reduce-overhead", 40 if "eager_bf16" in modes else 0)
    if "eager_bf16" in modes:
        run_impl("eager_bf16", None, True, args, S)
    if "max-autotune" in modes:
        compiled("max-autotune", 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
