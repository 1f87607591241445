-- bench/gpu_bench.lua: the Part B UNets on the GPU, fdm against PyTorch on
-- the same GPU in the same run.
--
--   make bench-gpu                  (mk/bench_gpu.mk: FDM_TF32=1 by default)
--   ./build/fdm bench/gpu_bench.lua (by hand)
--
-- Workloads (lua/fdm/unet.lua, lua/fdm/flow.lua; bench/torch_gpu_bench.py
-- runs the same ones in PyTorch):
--   uncond_train  UnconditionalUNet D=128: one training step of batch 256
--                 (forward, MSE, backward, Adam)
--   cc_train      ClassConditionalUNet D=64: one training step of batch 64
--   cc_epoch      one epoch of the class-conditioned flow-matching recipe
--                 (flow.class_loss, Adam): 938 steps of batch 64 over random
--                 MNIST-shaped data held on the GPU (MNIST is not on the GPU
--                 machine; the data loader is not what is measured)
--   cfg_sample    the 300-step CFG sampler (guidance 5) for 1,000 digits, as
--                 flow.sample_class: 300 eval forwards of batch 2,000
-- fdm first, then PyTorch eager, eager under bf16 autocast, and torch.compile
-- in modes reduce-overhead and max-autotune (the faster is compared). Same
-- precision on both sides: TF32 matmuls and convolutions when FDM_TF32=1
-- (the default of `make bench-gpu`), strict float32 otherwise; then fdm
-- again under fdm.autocast("bfloat16") against PyTorch's bf16 autocast row,
-- each workload within BENCH_BOX (the epoch and the sampler extrapolated).
-- Each workload is time-boxed: it is timed over the steps that fit its box
-- and extrapolated to the whole epoch / sampler run when they do not all fit
-- (the table marks those with "~"). The share of the GPU's dense peak for the
-- precision comes from the FLOPs of the convolutions and linear layers,
-- counted by running one forward with F.conv2d/conv_transpose2d/linear
-- wrapped (a training step = 3 forwards' worth: forward, data and weight
-- gradients).
--
-- Prints a markdown table and writes JSON (BENCH_GPU_JSON, default
-- build/bench_gpu.json). Without a CUDA device it says why and exits 0.
--
-- Environment:
--   FDM_BENCH_DEVICE  cuda (default) or fake: the test suite's fake device
--                     (FDM_FAKE_BACKEND, default build/tests/fdm_fake_backend.so)
--                     at tiny sizes, PyTorch then on the CPU: a check of the
--                     scripts on a machine without a GPU
--   BENCH_GPU_BUDGET  seconds for the whole run (default 180); PyTorch gets what
--                     fdm leaves (at least 60), its compile modes are cut off at that
--   BENCH_BOX         seconds of timed work per train-step workload (default 4)
--   BENCH_LONG_BOX    seconds for the epoch and the sampler (default 20)
--   BENCH_FDM_BF16    0 skips fdm's bf16 autocast rows (default 1)
--   BENCH_FDM_GRAPH   0 skips fdm's CUDA-graph rows (default 1): each step
--                     captured once and replayed, as --graph in the scripts
--   BENCH_WORKLOADS   comma list (default cc_train,uncond_train,cc_epoch,cfg_sample)
--   BENCH_TORCH       0 skips PyTorch; BENCH_PYTHON the interpreter (python3)
--   BENCH_TORCH_MODES (default eager,eager_bf16,reduce-overhead,max-autotune)
--   BENCH_COMPILE_WORKLOADS  the workloads torch.compile runs (default: all of
--                     BENCH_WORKLOADS); the others get "not run" in its rows
--   BENCH_PROFILE     1: after fdm's float32/TF32 runs, each workload again for
--                     a few steps under fdm.profile (every kernel waited for):
--                     the kernels that take the time, per step
--   FDM_CUDNN_BENCHMARK  1 (the default of `make bench-gpu`): cuDNN algorithms
--                     timed once per shape, on both sides (cudnn.benchmark for
--                     PyTorch); 0: cuDNN's heuristics on both sides
local fdm = rawget(_G, "fdm") or require "fdm"
local unet = require "fdm.unet"
local flow = require "fdm.flow"
local Step = require "fdm.graph_step"
local F = fdm.F

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local HERE = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "bench"
local DEV = env("FDM_BENCH_DEVICE", "cuda")
local TINY = DEV ~= "cuda"
local BUDGET = tonumber(env("BENCH_GPU_BUDGET", "180"))
local BOX = tonumber(env("BENCH_BOX", TINY and "0.5" or "4"))
local LONG_BOX = tonumber(env("BENCH_LONG_BOX", TINY and "1" or "20"))
local WORKLOADS = env("BENCH_WORKLOADS", "cc_train,uncond_train,cc_epoch,cfg_sample")
local DO_TORCH = env("BENCH_TORCH", "1") ~= "0"
local PYTHON = env("BENCH_PYTHON", "python3")
local TORCH_MODES = env("BENCH_TORCH_MODES", "eager,eager_bf16,reduce-overhead,max-autotune")
local COMPILE_WORKLOADS = env("BENCH_COMPILE_WORKLOADS", WORKLOADS)
local PROFILE = env("BENCH_PROFILE", "0") ~= "0"
-- CUDA graphs rows (fdm.graph_step, the samplers' graph = true) where the device has them
local GRAPHS = env("BENCH_FDM_GRAPH", "1") ~= "0"
local GRAPH = false   -- set while the graphed rows run
local FDM_BF16 = env("BENCH_FDM_BF16", "1") ~= "0"
local CUDNN_BENCH = env("FDM_CUDNN_BENCHMARK", "0") ~= "0"
-- as the plugin reads it (fdm.get_tf32 where the runtime has it)
local TF32 = fdm.get_tf32 and fdm.get_tf32() or env("FDM_TF32", "0") == "1" or env("FDM_TF32", "0") == "true"
local JSON_PATH = env("BENCH_GPU_JSON", "build/bench_gpu.json")
local PRECISION = TF32 and "tf32" or "fp32"

local clock = fdm.time
local T_START = clock()

local function split(s)
  local out = {}
  for w in s:gmatch("[^,%s]+") do out[#out + 1] = w end
  return out
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local s = p:read("*a")
  p:close()
  return s
end

---------------------------------------------------------------- the device
local function no_device(why)
  print("bench-gpu: no CUDA device: " .. tostring(why))
  print("bench-gpu: nothing measured (FDM_BENCH_DEVICE=fake runs the script on the test suite's fake device)")
  os.exit(0)
end

if DEV == "fake" then
  local path = env("FDM_FAKE_BACKEND", "build/tests/fdm_fake_backend.so")
  if not fdm.supports("fake", "copy") then
    local ok, err = pcall(fdm.load_backend, path)
    if not ok then
      print("bench-gpu: cannot load the fake device from " .. path .. " (make test builds it): " .. tostring(err))
      os.exit(0)
    end
  end
elseif DEV ~= "cuda" then
  error("FDM_BENCH_DEVICE must be cuda or fake, got " .. DEV)
end
do
  local ok, err = pcall(function() return fdm.zeros(1, { device = DEV }):sum():item() end)
  if not ok then no_device(err) end
end

-- the fake device has no graphs: emulated there (the same calls, run eagerly)
local GOPTS = { device = DEV, emulate = not fdm.graph_supported({ device = DEV }) or nil }
local gpu_name = DEV == "cuda" and (sh("nvidia-smi --query-gpu=name --format=csv,noheader") or ""):match("^[^\n]+")
  or "fake device (CPU kernels)"

-- dense peaks, TFLOP/s (NVIDIA datasheets; H200 has the H100 SXM's tensor cores)
local function peaks(name)
  if not name then return nil end
  if name:find("H200") then return { tf32 = 494.7, bf16 = 989.4, fp32 = 66.9, card = "H200" } end
  if name:find("H100") and name:find("PCIe") then return { tf32 = 378, bf16 = 756, fp32 = 51.2, card = "H100 PCIe" } end
  if name:find("H100") then return { tf32 = 494.7, bf16 = 989.4, fp32 = 66.9, card = "H100 SXM" } end
  return nil
end

---------------------------------------------------------------- sizes
local S = TINY and { uncond = { 8, 4 }, cc = { 8, 4 }, epoch_steps = 5, epoch_batch = 4, digits = 10,
                     sample_steps = 3, data = 64 }
  or { uncond = { 128, 256 }, cc = { 64, 64 }, epoch_steps = 938, epoch_batch = 64, digits = 1000,
       sample_steps = 300, data = 60000 }

-- every parameter and buffer of m onto dev (Module:to knows cpu/cuda only)
local function move(m, dev)
  fdm.no_grad(function()
    for _, mod in ipairs(m:modules()) do
      for _, name in ipairs(mod._param_names) do
        local p = mod._parameters[name]
        if p ~= nil and p.device ~= dev then
          local q = p:to(dev):detach()
          if p.requires_grad then q:requires_grad_() end
          mod._parameters[name] = q
        end
      end
      for _, name in ipairs(mod._buffer_names) do
        local b = mod._buffers[name]
        if b ~= nil and b.device ~= dev then mod._buffers[name] = b:to(dev) end
      end
    end
  end)
  return m
end

local function build(kind, D, dev)
  fdm.manual_seed(0)
  local m = kind == "uncond" and unet.UnconditionalUNet(1, D) or unet.ClassConditionalUNet(1, D, 10)
  return move(m, dev)
end

---------------------------------------------------------------- FLOPs
-- multiply-adds x 2 of one forward of one image, from the shapes the ops see
local function forward_flops(kind, D)
  local saved = { F.conv2d, F.conv_transpose2d, F.linear }
  local total = 0
  local function prod(t) local n = 1 for i = 1, #t do n = n * t[i] end return n end
  F.conv2d = function(x, w, ...)
    local y = saved[1](x, w, ...)
    local ws = w.shape
    total = total + 2 * prod(y.shape) * ws[2] * ws[3] * ws[4]
    return y
  end
  F.conv_transpose2d = function(x, w, ...)
    local ws = w.shape
    total = total + 2 * prod(x.shape) * ws[2] * ws[3] * ws[4]
    return saved[2](x, w, ...)
  end
  F.linear = function(x, w, ...)
    local ws = w.shape
    total = total + 2 * (prod(x.shape) / ws[2]) * ws[1] * ws[2]
    return saved[3](x, w, ...)
  end
  local ok, err = pcall(function()
    local m = build(kind, D, "cpu")
    m:eval()
    fdm.no_grad(function()
      local x = fdm.randn({ 1, 1, 28, 28 }, { device = "cpu" })
      if kind == "uncond" then return m(x) end
      local c = F.one_hot(fdm.tensor({ 3 }, { dtype = "int64", device = "cpu" }), 10):float()
      return m(x, c, fdm.rand({ 1, 1 }, { device = "cpu" }))
    end)
  end)
  F.conv2d, F.conv_transpose2d, F.linear = saved[1], saved[2], saved[3]
  if not ok then error(err) end
  return total
end

---------------------------------------------------------------- timing
local function sync(t) if t then t:sum():item() end end

-- warm-up, then up to `total` steps within `box` seconds: (seconds for all
-- `total` steps, steps timed); step() returns a tensor to synchronise on
local PROFILE_STEPS   -- set by the profile pass: run that many steps under fdm.profile instead
local function timed_steps(step, total, box, warmup)
  for _ = 1, warmup or 2 do sync(step()) end
  if PROFILE_STEPS then
    fdm.profile(true)
    local t0 = clock()
    for _ = 1, PROFILE_STEPS do sync(step()) end
    fdm.profile(false)
    return (clock() - t0) * total / PROFILE_STEPS, PROFILE_STEPS
  end
  collectgarbage(); collectgarbage()
  local t0, done, last = clock(), 0, nil
  while done < total do
    last = step()
    done = done + 1
    if done % 8 == 0 or done == total then
      sync(last)
      if clock() - t0 > box then break end
    end
  end
  sync(last)
  return (clock() - t0) * total / done, done
end

-- box: the time box (default BOX; the bf16 rows pass BOX to the long workloads too)
local function train_workload(kind, box)
  local D, N = S[kind][1], S[kind][2]
  local m = build(kind, D, DEV)
  m:train()
  local opt = fdm.optim.Adam(m:parameters(), { lr = 1e-4 })
  local x = fdm.randn({ N, 1, 28, 28 }, { device = DEV })
  local target = fdm.randn({ N, 1, 28, 28 }, { device = DEV })
  local args = { x }
  if kind == "cc" then
    args[2] = F.one_hot(fdm.randint(0, 10, { N }, { device = DEV }), 10):float()
    args[3] = fdm.rand({ N, 1 }, { device = DEV })
    args[4] = fdm.ge(fdm.rand(N, { device = DEV }), 0.1):float()
  end
  local function step()
    opt:zero_grad()
    local loss = F.mse_loss(m(table.unpack(args)), target)
    loss:backward()
    opt:step()
    return loss
  end
  local graphed
  if GRAPH then   -- the same step through fdm.graph_step (what --graph does in the training scripts)
    graphed = Step.new(function(xb, yb) return F.mse_loss(m(xb, table.unpack(args, 2)), yb) end, opt, DEV,
      GOPTS, 100000)
    step = function() return graphed:step(x, target, 1) end
  end
  local steps = 20
  local sec, done = timed_steps(step, steps, box or BOX)
  if graphed then graphed:free() end
  local per = sec / steps
  return { ips = N / per, seconds = per, unit = "s/step", timed = done, total = steps }
end

local function epoch_workload(box)
  local D, N, steps = S.cc[1], S.epoch_batch, S.epoch_steps
  local m = build("cc", D, DEV)
  m:train()
  local opt = fdm.optim.Adam(m:parameters(), { lr = 1e-3 })
  local n = S.data
  local data = fdm.rand({ n, 1, 28, 28 }, { device = DEV })
  local labels = fdm.randint(0, 10, { n }, { device = DEV })
  local perm = fdm.cat({ fdm.randperm(n, { device = DEV }), fdm.randperm(n, { device = DEV }) }, 1)
  local i = 0
  local graphed = GRAPH and Step.new(function(xb, yb) return flow.class_loss(m, xb, yb, 0.1, 10) end, opt, DEV,
    GOPTS, 100000)
  local function step()
    local k = i % steps
    i = i + 1
    local idx = perm:narrow(1, k * N + 1, N)
    local x1, lab = data:index_select(1, idx), labels:index_select(1, idx)
    if graphed then return graphed:step(x1, lab, i) end
    opt:zero_grad()
    local loss = flow.class_loss(m, x1, lab, 0.1, 10)
    loss:backward()
    opt:step()
    return loss
  end
  local sec, done = timed_steps(step, steps, box or LONG_BOX)
  if graphed then graphed:free() end
  return { ips = steps * N / sec, seconds = sec, unit = ("s/epoch of %d steps"):format(steps), timed = done,
           total = steps }
end

local function sample_workload(box)
  local D, n, steps, g = S.cc[1], S.digits, S.sample_steps, 5
  local m = build("cc", D, DEV)
  m:eval()
  local lab = {}
  for i = 1, n do lab[i] = (i - 1) % 10 end
  local c = flow.one_hot(fdm.tensor(lab, { dtype = "int64", device = DEV }), 10, DEV)
  local cc = fdm.cat({ c, fdm.zeros_like(c) }, 1)
  local x, i
  local function reset() x, i = fdm.randn({ n, 1, 28, 28 }, { device = DEV }), 0 end
  -- one Euler step of flow.sample_class (the same ops)
  local function step()
    if i >= steps then reset() end
    local t = i / steps
    x = fdm.no_grad(function()
      local u = m(fdm.cat({ x, x }, 1), cc, fdm.full({ 2 * n }, t, { device = DEV }))
      local uc, uu = u:narrow(1, 1, n), u:narrow(1, n + 1, n)
      return x + (uu + (uc - uu) * g) * (1 / steps)
    end)
    i = i + 1
    return x
  end
  local graph
  if GRAPH then   -- the step as flow.sample_class(..., {graph = true}) runs it: x, t and g on the device
    local tt, gs = fdm.zeros({ 2 * n }, { device = DEV }), fdm.full({}, g, { device = DEV })
    local function body()
      fdm.no_grad(function()
        local u = m(fdm.cat({ x, x }, 1), cc, tt)
        local uc, uu = u:narrow(1, 1, n), u:narrow(1, n + 1, n)
        x:copy_(x + (uu + (uc - uu) * gs) * (1 / steps))
      end)
    end
    local warmed = false
    step = function()
      if i >= steps then x:copy_(fdm.randn({ n, 1, 28, 28 }, { device = DEV })) i = 0 end
      tt:fill_(i / steps)
      if not warmed then body() warmed = true
      elseif not graph then graph = fdm.graph(body, GOPTS)
      else graph:replay() end
      i = i + 1
      return x
    end
  end
  reset()
  local sec, done = timed_steps(step, steps, box or LONG_BOX)
  if graph then graph:free() end
  return { ips = n / sec, seconds = sec, unit = ("s for %d digits x %d steps"):format(n, steps), timed = done,
           total = steps }
end

local RUN = {
  uncond_train = function(box) return train_workload("uncond", box) end,
  cc_train = function(box) return train_workload("cc", box) end,
  cc_epoch = epoch_workload,
  cfg_sample = sample_workload,
}

---------------------------------------------------------------- fdm
print(("bench-gpu %s: device %s (%s); precision %s; cuDNN algorithms %s; budget %d s%s"):format(
  os.date("!%Y-%m-%d %H:%M UTC"), DEV, gpu_name or "?", PRECISION, CUDNN_BENCH and "timed" or "by heuristics",
  BUDGET, TINY and "; TINY sizes (a check of the script, not a measurement)" or ""))

local flops_img = {}
do
  local fu, fc = forward_flops("uncond", S.uncond[1]), forward_flops("cc", S.cc[1])
  flops_img.uncond_train = 3 * fu
  flops_img.cc_train = 3 * fc
  flops_img.cc_epoch = 3 * fc
  flops_img.cfg_sample = 2 * S.sample_steps * fc
  print(("FLOPs of one forward per image (convolutions + linear): UnconditionalUNet D=%d %.3f GFLOP, "
    .. "ClassConditionalUNet D=%d %.3f GFLOP"):format(S.uncond[1], fu / 1e9, S.cc[1], fc / 1e9))
end

-- after the FLOP count (on the CPU): anything a model creates without a device goes to DEV
if fdm.set_default_device then fdm.set_default_device(DEV) end

local order = split(WORKLOADS)
local results = {}   -- results[workload][impl] = {ips, seconds, note}
-- one fdm run of workload w into results[w][impl]; autocast: a dtype or nil
local function run_fdm(w, impl, autocast, box)
  local t0, st0 = clock(), fdm.backend_stats(DEV)
  local ok, r = pcall(fdm.autocast, autocast, RUN[w], box)
  if ok then
    local st1 = fdm.backend_stats(DEV)
    r.note = r.timed < r.total and ("extrapolated from %d of %d steps"):format(r.timed, r.total) or nil
    r.device_allocs, r.device_downloads = st1.allocs - st0.allocs, st1.downloads - st0.downloads
    results[w][impl] = r
    print(("  %-8s %-13s %10.1f img/s  %.4f %s%s  (%.0f s; %s: %d allocations, %d downloads)"):format(impl, w,
      r.ips, r.seconds, r.unit, r.note and (", " .. r.note) or "", clock() - t0, DEV, r.device_allocs,
      r.device_downloads))
  else
    results[w][impl] = { error = tostring(r) }
    print(("  %-8s %-13s FAILED: %s"):format(impl, w, tostring(r)))
  end
  collectgarbage(); collectgarbage()
  fdm.empty_cache()
  io.stdout:flush()
end
for _, w in ipairs(order) do
  assert(RUN[w], "unknown workload " .. w)
  results[w] = {}
  run_fdm(w, "fdm", nil)
end
if GRAPHS then
  GRAPH = true
  for _, w in ipairs(order) do run_fdm(w, "fdm_graph", nil) end
  GRAPH = false
end
if FDM_BF16 then
  for _, w in ipairs(order) do run_fdm(w, "fdm_bf16", "bfloat16", BOX) end
end

-- where the time goes: each kernel waited for before and after (so a step
-- takes longer than unprofiled: the launch gaps that overlap are serialised)
if PROFILE then
  PROFILE_STEPS = TINY and 2 or 6
  for _, w in ipairs(order) do
    local ok, r = pcall(RUN[w], BOX)
    if not ok then
      print(("profile %s: FAILED %s"):format(w, tostring(r)))
    else
      local f = results[w].fdm
      local plain = f and f.seconds and (f.unit == "s/step" and f.seconds or f.seconds / f.total) * 1e3
      local text, total, calls = fdm.profile_report({ per = PROFILE_STEPS, per_name = "step", top = 14 })
      print(("profile %s: %d steps, %.2f ms per step profiled (%.0f kernel calls), %s ms unprofiled; top kernels:")
        :format(w, PROFILE_STEPS, total * 1e3, calls, plain and ("%.2f"):format(plain) or "?"))
      for line in text:gmatch("[^\n]+") do print(("profile %s:   %s"):format(w, line)) end
    end
    collectgarbage(); collectgarbage()
    io.stdout:flush()
  end
  PROFILE_STEPS = nil
end

---------------------------------------------------------------- PyTorch
local torch_name
if DO_TORCH then
  local left = math.max(60, BUDGET - (clock() - T_START))
  -- on the fake device PyTorch runs on the CPU: a check of the script, like fdm's half
  local cmd = ("%s %s/torch_gpu_bench.py --tf32 %d --cudnn-benchmark %d --budget %d --box %g --long-box %g "
    .. "--modes %s --workloads %s --compile-workloads %s --tiny %d --device %s 2>&1"):format(PYTHON, HERE,
    TF32 and 1 or 0, CUDNN_BENCH and 1 or 0, math.floor(left), BOX, LONG_BOX, TORCH_MODES, WORKLOADS,
    COMPILE_WORKLOADS, TINY and 1 or 0,
    DEV == "cuda" and "cuda" or "cpu")
  print("PyTorch: " .. cmd)
  local p = io.popen(cmd)
  for line in p:lines() do
    local w, impl, ips, s, note = line:match("^RESULT (%S+) (%S+) (%S+) (%S+) ?(.*)$")
    if w and results[w] then
      results[w][impl] = { ips = tonumber(ips), seconds = tonumber(s), note = note:gsub("_", " ") }
      print(("  torch %-13s %-24s %10.1f img/s  %s"):format(w, impl, tonumber(ips), note:gsub("_", " ")))
    else
      local dev = line:match("^DEVICE (.+)$")
      if dev then torch_name = dev end
      local fw, fimpl, msg = line:match("^FAILED (%S+) (%S+) (.*)$")
      if fw and results[fw] then results[fw][fimpl] = { error = "failed: " .. msg } end
      local cut_kind, cut_impl = line:match("^(%u+) (compile:%S+)")
      if cut_kind == "TIMEOUT" or cut_kind == "SKIPPED" then
        for _, w in ipairs(order) do
          results[w][cut_impl] = results[w][cut_impl] or { error = cut_kind == "TIMEOUT" and "timed out" or "skipped (time box)" }
        end
      end
      print("  torch: " .. line)
    end
    io.stdout:flush()
  end
  p:close()
end

---------------------------------------------------------------- table
local pk = peaks(DEV == "cuda" and (gpu_name or torch_name) or nil)

local function share(w, r, prec)
  if not (r and r.ips and flops_img[w]) then return "-", "-" end
  local tf = r.ips * flops_img[w] / 1e12
  local peak = pk and pk[prec]
  return ("%.3g"):format(tf), peak and ("%.1f %%"):format(100 * tf / peak) or "-"
end

local function best_compile(res)
  local best, mode
  for _, m in ipairs({ "reduce-overhead", "max-autotune" }) do
    local r = res["compile:" .. m]
    if r and r.ips and (not best or r.ips > best.ips) then best, mode = r, m end
  end
  return best, mode
end

print()
print(("GPU: %s; peak dense %s: %s TFLOP/s%s"):format(gpu_name or torch_name or "?", PRECISION,
  pk and tostring(pk[PRECISION]) or "?", pk and (", bf16 " .. pk.bf16) or ""))
print()
print("| workload | implementation | precision | images/s | fdm ÷ this | TFLOP/s | % of peak |")
print("|---|---|---|---:|---:|---:|---:|")
-- fdm_r: the fdm row this one is compared with; graph_r: also fdm's graphed row ("eager / graphed")
local function row(w, name, prec, r, fdm_r, graph_r)
  local ips = r and r.ips and ((r.note and r.note:find("extrapolated") and "~" or "") .. ("%.1f"):format(r.ips))
    or (r and r.error and (r.error:match("^([^:]+)") or "failed") or "-")
  local ratio = (fdm_r and fdm_r.ips and r and r.ips) and ("%.2f"):format(fdm_r.ips / r.ips) or "-"
  if ratio ~= "-" and graph_r and graph_r.ips then ratio = ratio .. (" / %.2f"):format(graph_r.ips / r.ips) end
  local tf, pct = share(w, r, prec)
  print(("| %s | %s | %s | %s | %s | %s | %s |"):format(w, name, prec, ips, ratio, tf, pct))
end
for _, w in ipairs(order) do
  local res = results[w]
  local f = res.fdm
  local fg = res.fdm_graph
  row(w, "fdm", PRECISION, f, nil)
  if fg then row(w, "fdm, CUDA graph", PRECISION, fg, nil) end
  if DO_TORCH then
    row(w, "PyTorch eager", PRECISION, res.eager, f, fg)
    local b, mode = best_compile(res)
    if not b then
      local why = {}
      for _, m in ipairs({ "reduce-overhead", "max-autotune" }) do
        local r = res["compile:" .. m]
        if r and r.error then why[#why + 1] = m .. " " .. (r.error:match("^([^:]+)") or "failed") end
      end
      if #why > 0 then b = { error = table.concat(why, ", ") } end
    end
    row(w, "PyTorch compile" .. (mode and (" (" .. mode .. ")") or ""), PRECISION, b, f, fg)
    row(w, "PyTorch eager, bf16 autocast", "bf16", res.eager_bf16, res.fdm_bf16)
  end
  if res.fdm_bf16 then row(w, "fdm, bf16 autocast", "bf16", res.fdm_bf16, nil)
  else print(("| %s | fdm, bf16 autocast | bf16 | not run (BENCH_FDM_BF16=0) | - | - | - |"):format(w)) end
end
print()
print("~: timed over part of the run and extrapolated. fdm ÷ this > 1: fdm is faster (the bf16 row against fdm "
  .. "under bf16 autocast; \"a / b\": fdm eager / fdm with a CUDA graph). TFLOP/s from the "
  .. "convolution and linear FLOPs only (training step = 3 forwards).")
print(("cc_epoch: %d steps of batch %d over random MNIST-shaped data on the device (MNIST is not on the GPU "
  .. "machine); cfg_sample: %d digits, %d Euler steps, guidance 5 (batch %d per forward)."):format(S.epoch_steps,
  S.epoch_batch, S.digits, S.sample_steps, 2 * S.digits))

---------------------------------------------------------------- JSON
local function json(v, ind)
  ind = ind or ""
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do
      parts[#parts + 1] = ind .. "  " .. json(tostring(k)) .. ": " .. json(v[k], ind .. "  ")
    end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(ch) return ("\\u%04x"):format(ch:byte()) end) .. '"'
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return ("%.6g"):format(v)
  elseif t == "boolean" then
    return tostring(v)
  end
  return "null"
end

local doc = {
  date = os.date("!%Y-%m-%dT%H:%M:%SZ"), device = DEV, gpu = gpu_name or torch_name, precision = PRECISION,
  tiny = TINY, peaks_tflops = pk, flops_per_image = flops_img, results = results,
  cudnn_algorithms = CUDNN_BENCH and "timed" or "heuristics",
  data = "random MNIST-shaped tensors on the device (MNIST not on the GPU machine)",
}
local dir = JSON_PATH:match("^(.*)/[^/]*$")
if dir then os.execute("mkdir -p '" .. dir .. "'") end
local fh = io.open(JSON_PATH, "w")
if fh then
  fh:write(json(doc), "\n")
  fh:close()
  print("JSON: " .. JSON_PATH)
else
  print("JSON: cannot write " .. JSON_PATH)
end
