-- bench/bench.lua: images/s of the Part B UNets in fdm, against PyTorch.
--
--   make bench                              (mk/bench.mk; OMP_NUM_THREADS=2)
--   ./build/fdm bench/bench.lua             (the same, by hand)
--
-- For UnconditionalUNet D=128 batch 256 and ClassConditionalUNet D=64 batch
-- 64 (28x28 inputs), after warm-up:
--   train: one step = forward, MSE loss, backward, Adam step
--   eval:  one forward under no_grad, eval mode
-- each config followed at once by bench/torch_bench.py on the same config
-- (torch.set_num_threads(2); when python3 with torch is importable), so the
-- two numbers of a ratio are taken close together; then a table fdm/PyTorch.
-- Results, profiles and the optimisation log: PERFORMANCE.md.
-- Finally the Lua dispatch overhead: one train step with every C entry
-- point (fdm.*, fdm.F.*, tensor methods and operators) wrapped by a timer;
-- Lua time = step wall time - time inside C calls (outermost only) - the
-- wrappers' own cost (calibrated); and a tiny config (D=8, batch 1) whose
-- step time bounds the fixed per-step cost from above.
--
-- Environment:
--   BENCH_ITERS    timed iterations per measurement (default 1: one uncond
--                  D=128 batch-256 step takes tens of seconds on 2 cores)
--   BENCH_REPEATS  measurements per figure (default 3): fdm, then PyTorch
--                  (NCHW, then channels_last), repeated; the table gives the
--                  medians, and the ratio against the faster PyTorch layout
--   BENCH_TORCH_CL 0 skips PyTorch's channels_last runs
--   BENCH_WARMUP   warm-up iterations (default 1)
--   BENCH_CONFIGS  comma list (default uncond_D128_B256,cc_D64_B64,sampler_cc_D64_B512;
--                  the sampler config is the eval-mode forward at batch 2N = 512
--                  of scripts/eval.lua's 300-step CFG sampler, --batch 256)
--   BENCH_MODES    train,eval (default both)
--   BENCH_TORCH    0 skips PyTorch;  BENCH_PYTHON the interpreter (/usr/bin/python3)
--   BENCH_OVERHEAD 0 skips the dispatch-overhead measurement
--   BENCH_OVERHEAD_CONFIGS  configs instrumented (default cc_D64_B64,uncond_D8_B1,cc_D8_B1)
-- For a profile of one loop: BENCH_CONFIGS=cc_D64_B64 BENCH_MODES=train
--   BENCH_TORCH=0 BENCH_OVERHEAD=0 perf record -g ./build/fdm bench/bench.lua
local fdm = rawget(_G, "fdm") or require "fdm"
local F = fdm.F

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local ITERS = tonumber(env("BENCH_ITERS", "1"))
local WARMUP = tonumber(env("BENCH_WARMUP", "1"))
local CONFIG_LIST = env("BENCH_CONFIGS", "uncond_D128_B256,cc_D64_B64,sampler_cc_D64_B512")
local REPEATS = math.max(1, tonumber(env("BENCH_REPEATS", "3")))
local DO_TORCH_CL = env("BENCH_TORCH_CL", "1") ~= "0"
local MODE_LIST = env("BENCH_MODES", "train,eval")
local DO_TORCH = env("BENCH_TORCH", "1") ~= "0"
local DO_OVERHEAD = env("BENCH_OVERHEAD", "1") ~= "0"
local PYTHON = env("BENCH_PYTHON", "/usr/bin/python3")
local OVERHEAD_LIST = env("BENCH_OVERHEAD_CONFIGS", "cc_D64_B64,uncond_D8_B1,cc_D8_B1")

local HERE = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "bench"

---------------------------------------------------------------- clock
local clock, clock_name
do
  local ok, sys = pcall(require, "system")          -- lua-system (busted's dependency)
  if ok and type(sys) == "table" and sys.monotime then
    clock, clock_name = sys.monotime, "system.monotime"
  elseif type(fdm.time) == "function" then
    clock, clock_name = fdm.time, "fdm.time"
  else
    clock, clock_name = function()
      local p = io.popen("date +%s.%N"); local s = p:read("*l"); p:close(); return tonumber(s)
    end, "date +%s.%N (coarse)"
  end
end

local function split(s)
  local out = {}
  for w in s:gmatch("[^,%s]+") do out[#out + 1] = w end
  return out
end
local MODES = {}
for _, m in ipairs(split(MODE_LIST)) do MODES[m] = true end

---------------------------------------------------------------- configs
local CONFIGS = {
  uncond_D128_B256 = { kind = "uncond", D = 128, N = 256 },
  cc_D64_B64 = { kind = "cc", D = 64, N = 64 },
  sampler_cc_D64_B512 = { kind = "cc", D = 64, N = 512, eval_only = true },
  tc_D64_B64 = { kind = "tc", D = 64, N = 64 },
  uncond_D8_B1 = { kind = "uncond", D = 8, N = 1 },
  cc_D8_B1 = { kind = "cc", D = 8, N = 1 },
}

-- the model of a config with its train and eval steps (bench/unet_step.lua)
local make_step = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "bench") .. "/unet_step.lua")
local function make(cfg) return make_step(cfg.kind, cfg.D, cfg.N) end

local function time_loop(f, iters, warmup)
  for _ = 1, warmup do f(); collectgarbage("step", 0) end
  collectgarbage(); collectgarbage()
  local t0 = clock()
  for _ = 1, iters do f() end
  return (clock() - t0) / iters
end

---------------------------------------------------------------- header
local function machine()
  local f = io.open("/proc/cpuinfo")
  local model = "?"
  if f then
    for line in f:lines() do
      local m = line:match("^model name%s*:%s*(.+)$")
      if m then model = m break end
    end
    f:close()
  end
  local p = io.popen("nproc 2>/dev/null")
  local n = p and p:read("*l") or "?"
  if p then p:close() end
  return model .. ", " .. n .. " cores"
end

-- the processor's widest vector ISA (the bench's figures depend on it) and
-- the overrides in force: FDM_CPU_ISA=avx2 (fdm; `make bench-avx2` also
-- builds fdm's own loops for x86-64-v3), OPENBLAS_CORETYPE (fdm's BLAS) and
-- ONEDNN_MAX_CPU_ISA (PyTorch's convolutions)
local function isa()
  local f = io.open("/proc/cpuinfo")
  local flags = ""
  if f then
    for line in f:lines() do
      local m = line:match("^flags%s*:%s*(.+)$")
      if m then flags = " " .. m .. " " break end
    end
    f:close()
  end
  local hw = flags:find(" avx512f ") and "AVX-512" or flags:find(" avx2 ") and "AVX2" or "SSE"
  local forced = os.getenv("FDM_CPU_ISA")
  local used = (forced and forced:lower() == "avx2" and hw == "AVX-512") and "AVX2 (forced: FDM_CPU_ISA=avx2)" or hw
  return ("ISA %s (processor: %s); OPENBLAS_CORETYPE=%s ONEDNN_MAX_CPU_ISA=%s"):format(used, hw,
    os.getenv("OPENBLAS_CORETYPE") or "(unset)", os.getenv("ONEDNN_MAX_CPU_ISA") or "(unset)")
end

local function loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return "?" end
  local s = f:read("*l"); f:close()
  return s:match("^(%S+ %S+ %S+)") or s
end

print(("fdm bench %s: %s; OMP_NUM_THREADS=%s OMP_WAIT_POLICY=%s; iters %d, warm-up %d, repeats %d; clock %s; load average %s"):format(
  os.date("!%Y-%m-%d %H:%M UTC"), machine(), os.getenv("OMP_NUM_THREADS") or "(unset)",
  os.getenv("OMP_WAIT_POLICY") or "(unset)", ITERS, WARMUP, REPEATS, clock_name, loadavg()))
print(isa())

---------------------------------------------------------------- runs
-- fdm then PyTorch for each config in turn, so that the two numbers of a
-- ratio are taken close together (the box's load changes by the minute)
local results = {}   -- results[cfg][mode] = {fdm = img/s, torch = img/s}
local order = split(CONFIG_LIST)

local torch_ok = nil   -- nil: not probed yet
-- one PyTorch measurement of config `name` (layout "nchw" or "cl"); adds the
-- figures to results[name][mode][layout]
local function run_torch(name, modes, layout)
  if not DO_TORCH then return end
  if torch_ok == nil then
    torch_ok = os.execute(PYTHON .. " -c 'import torch' >/dev/null 2>&1") and true or false
    if not torch_ok then print("PyTorch: " .. PYTHON .. " cannot import torch; skipped") end
  end
  if not torch_ok then return end
  local cmd = ("%s %s/torch_bench.py --bench --threads 2 --iters %d --warmup %d --configs %s --modes %s%s 2>&1"):format(
    PYTHON, HERE, ITERS, WARMUP, name, modes, layout == "cl" and " --channels-last" or "")
  local p = io.popen(cmd)
  for line in p:lines() do
    local cname, mode, ips, s = line:match("^RESULT (%S+) (%S+) (%S+) (%S+)")
    if cname and results[cname] and results[cname][mode] then
      local r = results[cname][mode]
      r[layout][#r[layout] + 1] = tonumber(ips)
      io.write(("  torch %-5s %-4s %9.2f img/s  (%.4f s)\n"):format(mode, layout, tonumber(ips), tonumber(s)))
    else
      io.write("  torch: " .. line .. "\n")
    end
    io.flush()
  end
  p:close()
end

local function median(t)
  if #t == 0 then return nil end
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

if DO_TORCH then
  print(("PyTorch: %s %s/torch_bench.py --bench --threads 2 --iters %d --warmup %d --configs <config> [--channels-last]"):format(
    PYTHON, HERE, ITERS, WARMUP))
end
for _, name in ipairs(order) do
  local cfg = assert(CONFIGS[name], "unknown config " .. name)
  results[name] = { loads = {} }
  local modes = {}
  for _, mode in ipairs({ "train", "eval" }) do
    if MODES[mode] and not (cfg.eval_only and mode == "train") then
      modes[#modes + 1] = mode
      results[name][mode] = { fdm = {}, nchw = {}, cl = {} }
    end
  end
  local m, train_step, eval_step = make(cfg)
  io.write(("%-18s %d params, batch %d\n"):format(name, m:num_parameters(), cfg.N))
  -- fdm and PyTorch interleaved: each repeat measures fdm, then PyTorch in
  -- both layouts, so every figure of a ratio is taken within a minute or two
  for rep = 1, REPEATS do
    local la = loadavg()
    results[name].loads[rep] = la
    io.write(("  repeat %d, load average %s\n"):format(rep, la))
    for _, mode in ipairs(modes) do
      local dt
      if mode == "train" then m:train(); dt = time_loop(train_step, ITERS, WARMUP)
      else m:eval(); dt = time_loop(eval_step, ITERS, WARMUP) end
      local r = results[name][mode]
      r.fdm[#r.fdm + 1] = cfg.N / dt
      io.write(("  fdm   %-5s      %9.2f img/s  (%.4f s)\n"):format(mode, cfg.N / dt, dt)); io.flush()
    end
    collectgarbage(); collectgarbage()
    run_torch(name, table.concat(modes, ","), "nchw")
    if DO_TORCH_CL then run_torch(name, table.concat(modes, ","), "cl") end
    for _, mode in ipairs(modes) do   -- this repeat's ratio, against its faster PyTorch layout
      local r = results[name][mode]
      local t = math.max(r.nchw[rep] or 0, r.cl[rep] or 0)
      if t > 0 and r.fdm[rep] then r.ratios = r.ratios or {}; r.ratios[#r.ratios + 1] = r.fdm[rep] / t end
    end
  end
  m, train_step, eval_step = nil, nil, nil
  collectgarbage(); collectgarbage()
end

print()
print(("medians of %d repeats, fdm and PyTorch interleaved; %s"):format(REPEATS, isa()))
print("fdm/torch: the fdm median over the faster PyTorch layout's median; per-rep: the median of each")
print("repeat's own ratio (fdm over that repeat's faster PyTorch layout)")
print(("%-20s %-6s %10s %11s %11s %6s %9s %8s  %s"):format("config", "mode", "fdm img/s", "torch NCHW",
  "torch NHWC", "best", "fdm/torch", "per-rep", "load averages (1, 5, 15 min) at each repeat"))
print(string.rep("-", 119))
local function f2(v) return v and ("%.2f"):format(v) or "-" end
for _, name in ipairs(order) do
  for _, mode in ipairs({ "train", "eval" }) do
    local r = results[name][mode]
    if r then
      local fm, tn, tc = median(r.fdm), median(r.nchw), median(r.cl)
      local best, which = tn, "NCHW"
      if tc and (not tn or tc > tn) then best, which = tc, "NHWC" end
      local pr = r.ratios and median(r.ratios)
      print(("%-20s %-6s %10s %11s %11s %6s %9s %8s  %s"):format(name, mode, f2(fm), f2(tn), f2(tc),
        best and which or "-", best and ("%.3f"):format(fm / best) or "-", pr and ("%.3f"):format(pr) or "-",
        table.concat(results[name].loads, " | ")))
    end
  end
end
local s = results.sampler_cc_D64_B512
if s and s.eval and median(s.eval.fdm) then
  local fm = median(s.eval.fdm)
  print(("sampler (scripts/eval.lua, 300 steps, CFG, 256 samples per batch of 512): fdm %.1f s per batch, %.2f samples/s"):format(
    300 * 512 / fm, 256 / (300 * 512 / fm)))
end
print()

---------------------------------------------------------------- dispatch overhead
if DO_OVERHEAD then
  -- wrap every C function reachable from Lua code: fdm.*, fdm.F.*, tensor
  -- methods and arithmetic metamethods. Only the outermost call is timed (a
  -- C op called from a Lua-written method counts once, as C).
  local SKIP = { no_grad = true }   -- calls back into Lua
  local stats = { calls = 0, ctime = 0, by = {} }
  local depth = 0
  local saved = {}
  local current
  local function finish(t0, ...)
    local dt = clock() - t0
    stats.ctime = stats.ctime + dt
    local b = stats.by[current]
    if not b then b = { 0, 0 }; stats.by[current] = b end
    b[1], b[2] = b[1] + 1, b[2] + dt
    depth = 0
    return ...
  end
  local function wrap(tbl, k, f, label)
    saved[#saved + 1] = { tbl, k, f }
    label = label or k
    rawset(tbl, k, function(...)
      if depth > 0 then return f(...) end
      depth = 1
      current = label
      stats.calls = stats.calls + 1
      return finish(clock(), f(...))
    end)
  end
  local function wrap_table(tbl, prefix)
    local keys = {}
    for k, f in pairs(tbl) do
      if type(f) == "function" and not SKIP[k] and debug.getinfo(f, "S").what == "C" then keys[#keys + 1] = k end
    end
    for _, k in ipairs(keys) do wrap(tbl, k, tbl[k], prefix .. k) end
  end
  local function unwrap_all()
    for i = #saved, 1, -1 do rawset(saved[i][1], saved[i][2], saved[i][3]) end
    saved = {}
  end
  local mt = debug.getregistry()["fdm.Tensor"]
  local function instrument()
    wrap_table(fdm, "fdm."); wrap_table(F, "F."); wrap_table(fdm.Tensor, "t:")
    for _, k in ipairs({ "__add", "__sub", "__mul", "__div", "__pow", "__unm" }) do
      if mt[k] then wrap(mt, k, mt[k], "t" .. k) end
    end
  end

  -- cost of one wrapper around a trivial C call
  local n = 200000
  local probe = fdm.is_grad_enabled
  local t0 = clock()
  for _ = 1, n do probe() end
  local raw = clock() - t0
  instrument()
  t0 = clock()
  for _ = 1, n do fdm.is_grad_enabled() end
  local wrapped = clock() - t0
  unwrap_all()
  local per_wrap = math.max(0, (wrapped - raw) / n)

  print(("Lua dispatch overhead (one instrumented step after warm-up; wrapper cost %.2f us/call subtracted)"):format(per_wrap * 1e6))
  print(("%-18s %-6s %8s %10s %10s %10s %8s %9s"):format("config", "mode", "C calls", "wall s", "in C s", "Lua s", "Lua %", "us/call"))
  local over_order = split(OVERHEAD_LIST)
  local tiny, breakdowns = {}, {}
  for _, name in ipairs(over_order) do
    local cfg = CONFIGS[name]
    local m, train_step, eval_step = make(cfg)
    for _, mode in ipairs({ "train", "eval" }) do
      if MODES[mode] then
        local f = mode == "train" and train_step or eval_step
        if mode == "train" then m:train() else m:eval() end
        f()   -- warm-up (Adam state, allocator)
        collectgarbage(); collectgarbage()
        -- plain timing too, for the tiny configs (upper bound of fixed cost)
        local plain = cfg.N == 1 and time_loop(f, 20, 1) or 0
        instrument()
        stats.calls, stats.ctime, stats.by, depth = 0, 0, {}, 0
        local w0 = clock()
        f()
        local wall = clock() - w0
        unwrap_all()
        local lua = math.max(0, wall - stats.ctime - stats.calls * per_wrap)
        print(("%-18s %-6s %8d %10.4f %10.4f %10.4f %7.2f%% %9.2f"):format(name, mode, stats.calls, wall,
          stats.ctime, lua, 100 * lua / wall, 1e6 * lua / stats.calls))
        if cfg.N > 1 then
          local rows = {}
          for k, b in pairs(stats.by) do rows[#rows + 1] = { k, b[1], b[2] } end
          table.sort(rows, function(a, b) return a[3] > b[3] end)
          local lines = { ("time by entry point, %s %s (the whole backward is one call):"):format(name, mode) }
          for i = 1, math.min(8, #rows) do
            lines[#lines + 1] = ("  %-24s %5d calls %9.4f s %6.2f%%"):format(rows[i][1], rows[i][2], rows[i][3], 100 * rows[i][3] / wall)
          end
          breakdowns[#breakdowns + 1] = table.concat(lines, "\n")
        end
        if cfg.N == 1 then tiny[#tiny + 1] = ("%s %s: %.2f ms/step (%.0f steps/s), %d C calls -> %.1f us per call all-in"):format(
          name, mode, plain * 1e3, 1 / plain, stats.calls, 1e6 * plain / stats.calls) end
      end
    end
    m, train_step, eval_step = nil, nil, nil
    collectgarbage()
  end
  print("tiny configs (kernels negligible; an upper bound of the fixed per-op cost: Lua + binding + C dispatch + tiny kernel):")
  for _, s in ipairs(tiny) do print("  " .. s) end
  for _, s in ipairs(breakdowns) do print(s) end
end
