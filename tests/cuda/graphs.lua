-- tests/cuda/graphs.lua: CUDA graphs against eager runs on the GPU, run by
-- fdm itself (no busted): fdm tests/cuda/graphs.lua (make test-cuda-graphs;
-- tools/gpu-check.sh). From the same seed:
--   draws     random draws in a graph (capture + replays) = the eager draws, bit for bit
--   train     N steps of the class-conditioned UNet with Adam, a scheduler and a per-step lr,
--             graphed (fdm.graph_step, as fdm.train --graph) against eager:
--             losses (1e-4 relative) and parameters (3e-4; cuDNN's and atomicAdd's
--             order may differ between runs, so not bit for bit; conv biases
--             before a BatchNorm, whose gradient is only rounding noise, within
--             Adam's envelope of lr per step)
--   sampler   flow.sample_class with graph = true against eager (1e-4 in norm)
--   ddpm      fdm.diffusion's sampler (CFG, fixed variance) graphed against eager (1e-4)
--   errors    :item() inside a capture is a clear error, and a capture after it works
--   memory    a freed graph gives its memory back to the allocator
--   speed     eager and graphed steps per second (informational)
-- Prints one line per case and "graphs on DEV: P passed, F failed"; exits 1
-- on a failure, 0 with "no CUDA device: skipped (reason)" without a device.
-- FDM_GRAPHS_DEVICE=fake runs it on the test device with emulated graphs
-- (tools/gpu-check.sh's dry run), loaded from FDM_FAKE_BACKEND.
local fdm = require "fdm"
local flow = require "fdm.flow"
local unet = require "fdm.unet"
local Step = require "fdm.graph_step"

local DEV = os.getenv("FDM_GRAPHS_DEVICE") or "cuda"
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
dofile(HERE .. "/open_device.lua")(DEV)
local EMULATE = not fdm.graph_supported({ device = DEV })
local GOPTS = { device = DEV, emulate = EMULATE }
local QUICK = DEV ~= "cuda"
local WIDTH, BATCH, STEPS = QUICK and 4 or 64, QUICK and 8 or 64, QUICK and 5 or 20

local C = dofile(HERE .. "/check.lua")(8)
local case, rel = C.case, C.rel

local function exact(a, b) return rel(a, b) == 0 end

case("draws", function()
  local function draws()
    return fdm.randn(1000, { device = DEV }), fdm.rand(333, { device = DEV }),
           fdm.randint(0, 7, { 77 }, { device = DEV })
  end
  fdm.manual_seed(4)
  local eager = {}
  for k = 1, 4 do eager[k] = { draws() } end
  fdm.manual_seed(4)
  local g, a, b, c = fdm.graph(draws, GOPTS)
  local got = { { a:clone(), b:clone(), c:clone() } }
  for k = 2, 4 do
    local x, y, z = g:replay()
    got[k] = { x:clone(), y:clone(), z:clone() }
  end
  g:free()
  for k = 1, 4 do
    for j = 1, 3 do
      if not exact(got[k][j]:float(), eager[k][j]:float()) then
        return ("run %d draw %d differs from the eager draw"):format(k, j)
      end
    end
  end
end)

-- N steps from one seed; returns the losses, the net and the steps/s after warm-up
local function train(graph)
  fdm.manual_seed(17)
  local net = unet.ClassConditionalUNet(1, WIDTH, 10):to(DEV)
  local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-3 })
  local sched = fdm.optim.ExponentialLR(opt, 0.9)
  local step = Step.new(function(x, y) return flow.class_loss(net, x, y, 0.1, 10) end, opt, DEV,
    graph and GOPTS or nil, 1000)
  local xs, ys = fdm.rand(STEPS, BATCH, 1, 28, 28), fdm.randint(0, 10, { STEPS, BATCH })
  local losses, t0 = {}, nil
  local function read() for _, v in ipairs(step:flush()) do losses[#losses + 1] = v end end
  for i = 1, STEPS do
    if i == 3 then   -- timed from here, after the warm-up and the capture, the GPU idle
      if graph then read() end
      t0 = fdm.time()
    end
    opt.param_groups[1].lr = sched:get_last_lr()[1] * (1 - 0.01 * i)   -- a per-step lr, as train_ddpm's
    local loss = step:step(xs[i], ys[i], i)
    if not graph then losses[i] = loss:item() end
    if i % 5 == 0 then sched:step() end
  end
  if graph then read() end
  local dt = fdm.time() - t0
  step:free()
  return losses, net, (STEPS - 2) / dt
end

local eager_rate, graph_rate
case("train", function()
  local le, ne, re = train(false)
  local lg, ng, rg = train(true)
  eager_rate, graph_rate = re, rg
  if #lg ~= #le then return ("%d graphed losses, %d eager"):format(#lg, #le) end
  for i = 1, #le do
    if math.abs(lg[i] - le[i]) > 1e-4 * math.abs(le[i]) then
      return ("step %d: loss %.7g graphed, %.7g eager"):format(i, lg[i], le[i])
    end
  end
  -- A conv bias right before a BatchNorm has a zero gradient in exact
  -- arithmetic (the batch mean removes it): what it gets is rounding noise,
  -- whose sign differs between any two runs (cuDNN's and atomicAdd's order),
  -- and Adam turns each such step into about +-lr. Those biases are held to
  -- Adam's envelope (at most lr per step apart each way), every other
  -- parameter to 3e-4 relative: a BatchNorm bias starts at zero, so after
  -- 20 steps its norm is small while Adam turns rounding-level gradient
  -- differences into update differences (an H200, 2026-11-28: 1.16e-4 on
  -- down2's first BatchNorm bias; other runs under 1e-4).
  local noise = {}
  for _, e in ipairs(ne:named_modules()) do
    local kids = e[2]:named_children()
    for k = 1, #kids - 1 do
      if kids[k + 1][2]:is_a(fdm.nn.BatchNorm2d) and kids[k][2].bias then noise[kids[k][2].bias] = true end
    end
  end
  local pe, pg = ne:parameters(), ng:parameters()
  local held, worst, worst_i = 0, 0, 0
  for i = 1, #pe do
    if noise[pe[i]] then
      held = held + 1
      local d = (pg[i]:detach() - pe[i]:detach()):abs():max():item()
      if d > 2 * 1e-3 * STEPS then
        return ("parameter %d (a bias before a BatchNorm): %.3g apart, more than Adam's envelope %.3g"):format(
          i, d, 2 * 1e-3 * STEPS)
      end
    else
      local r = rel(pg[i]:detach(), pe[i]:detach())
      if r > worst then worst, worst_i = r, i end
      if r > 3e-4 then return ("parameter %d: relative difference %.3g"):format(i, r) end
    end
  end
  print(("info train: the largest parameter difference %.3g relative (parameter %d)"):format(worst, worst_i))
  if held == 0 then return "found no conv bias before a BatchNorm (the UNet's layout changed?)" end
end)

-- fn(graph options or nil) run from one seed without and with a graph: nil, or what differs
local function same_samples(what, seed, fn)
  local a = flow.with_rng(seed, fn, nil)
  local b = flow.with_rng(seed, fn, GOPTS)
  local r = rel(b, a)
  if r > 1e-4 then return ("graphed %s differ from eager ones: relative %.3g"):format(what, r) end
end

case("sampler", function()
  fdm.manual_seed(3)
  local net = unet.ClassConditionalUNet(1, WIDTH, 10):to(DEV)
  return same_samples("flow samples", 9, function(graph)
    return flow.sample_class(net, { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 },
      { steps = STEPS * 3, guidance = 5, device = DEV, graph = graph })
  end)
end)

case("ddpm", function()
  local D = require "fdm.diffusion"
  local M = require "fdm.ddpm_model"
  fdm.manual_seed(5)
  local model = M.new { hidden = WIDTH, device = DEV }
  model:eval()
  local cond = fdm.F.one_hot(fdm.arange(0, 10), 10):float():to(DEV)
  local uncond = fdm.zeros(1, 10, { device = DEV })
  return same_samples("DDPM samples", 2, function(graph)
    return D.sample(model, 10, { cond = cond, uncond = uncond, cfg = 5, steps = STEPS + 4, graph = graph })
  end)
end)

case("errors", function()
  local x = fdm.ones(4, { device = DEV })
  local ok, err = pcall(fdm.graph, function() return x:sum():item() end, GOPTS)
  if ok then return ":item() inside a capture did not fail" end
  if not tostring(err):find("outside the captured function", 1, true) then return "unclear error: " .. tostring(err) end
  if fdm.graph_capturing() then return "a capture is still open after the error" end
  local g, y = fdm.graph(function() return x * 3 end, GOPTS)
  x:fill_(2)
  g:replay()
  local v = y:sum():item()
  g:free()
  if v ~= 24 then return ("a capture after the error replayed to %g, expected 24"):format(v) end
end)

case("memory", function()
  collectgarbage()
  local before = fdm.backend_stats(DEV).live_bytes
  local x = fdm.randn(256, 256, { device = DEV })
  local g = fdm.graph(function() return (x:matmul(x) + 1):relu():sum() end, GOPTS)
  for _ = 1, 3 do g:replay() end
  g:free()
  g = nil
  collectgarbage()
  collectgarbage()
  local after = fdm.backend_stats(DEV).live_bytes
  local xb = 256 * 256 * 4
  if after > before + xb + 4096 then
    return ("%d bytes still live after the graph was freed (%d before, x holds %d)"):format(after, before, xb)
  end
end)

if eager_rate and graph_rate then
  print(("info speed: class-conditioned UNet D=%d batch %d: eager %.1f steps/s, graphed %.1f steps/s (%.2fx)%s"):format(
    WIDTH, BATCH, eager_rate, graph_rate, graph_rate / eager_rate, EMULATE and " (emulated: no capture)" or ""))
end
print(("graphs on %s%s: %d passed, %d failed"):format(DEV, EMULATE and " (emulated)" or "", C.passed, C.failed))
os.exit(C.failed == 0 and 0 or 1)
