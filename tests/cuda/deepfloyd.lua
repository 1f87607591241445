-- tests/cuda/deepfloyd.lua: DeepFloyd IF on a device against the CPU, run by
-- fdm itself (no busted): fdm tests/cuda/deepfloyd.lua (make
-- test-cuda-deepfloyd; GPU_CHECK_PARTS=deepfloyd tools/gpu-check.sh). On the
-- tiny random-weight folders of tests/data/deepfloyd-tiny, the same pipeline
-- on both devices from the same seed (the noise is drawn on the model's
-- device, bit for bit alike):
--   fp32          the T5 embedding, one stage I call (eps and variance), a
--                 4-step CFG sample with dynamic thresholding, a 3-step stage
--                 II upscale: 1e-4 relative in norm for the single calls, 1e-3
--                 for the samples (float32 sums in another order, compounded
--                 over the steps)
--   fp16 weights  the same with every UNet and T5 matrix stored in float16, as
--                 the published *.fp16.safetensors load (widened by the kernels)
--   bf16, fp16    model:set_precision (fdm.autocast): against the CPU at the
--                 same precision, each result within 1e-3 plus twice the CPU's
--                 own half-vs-float32 distance (the GPU rounds its convolution
--                 results to the half type once more, a perturbation of that
--                 kind and size; tests/cuda/parity.lua's autocast step)
-- Prints one line per case and "deepfloyd on DEV: P passed, F failed"; exits
-- 1 on a failure, 0 with "no CUDA device: skipped (reason)" without one.
-- FDM_IF_DEVICE=fake runs it on the test device (tools/gpu-check.sh's dry run).
local fdm = require "fdm"
local IF = require "fdm.deepfloyd"
local D = require "fdm.diffusion"

local DEV = os.getenv("FDM_IF_DEVICE") or "cuda"
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
dofile(HERE .. "/open_device.lua")(DEV)
local ROOT = os.getenv("FDM_IF_TINY") or (HERE .. "/../data/deepfloyd-tiny")

local C = dofile(HERE .. "/check.lua")(28)
local case, rel = C.case, C.rel

-- the tiny folders with float16 weights (made once, removed at the end)
local HALF
local function half_root()
  if not HALF then
    HALF = os.tmpname()
    os.remove(HALF)
    dofile(HERE .. "/if_half_folder.lua")(ROOT, HALF, { "if-i", "if-ii" })
  end
  return HALF
end

-- the pipeline on dev at a precision: embedding, one call, a sample, its upscale
local function pipeline(dev, precision, half_weights)
  local root, variant = ROOT, nil
  if half_weights then root, variant = half_root(), "fp16" end
  local m1 = IF.load(root .. "/if-i", { precision = precision, variant = variant })
  local m2 = IF.load(root .. "/if-ii", { text_model = m1, precision = precision, variant = variant })
  m1.disk_cache, m2.disk_cache = false, false
  if half_weights then   -- the variant really loaded half matrices
    local n16 = 0
    for _, t in pairs(m1.net.p) do if t.dtype == "float16" then n16 = n16 + 1 end end
    if n16 < 10 then error(("the fp16 variant gave %d float16 matrices"):format(n16)) end
  end
  if dev ~= "cpu" then
    m1:to(dev)
    m2:to(dev)
  end
  fdm.manual_seed(21)
  local c, u = m1:encode("a rocket ship"), m1:encode("")
  local x = fdm.randn({ 2, 3, 16, 16 }, { device = dev })
  local eps, var = m1(x, 500, c)
  local s = D.sample(m1, 2, { cond = c, uncond = u, cfg = 7, steps = 4 })
  local y = IF.upscale(m2, s, c, u, { steps = 3 })
  return { embedding = c, eps = eps, variance = var, sample = s, upscaled = y }
end

local NAMES = { "embedding", "eps", "variance", "sample", "upscaled" }
local TOL32 = { embedding = 1e-4, eps = 1e-4, variance = 1e-4, sample = 1e-3, upscaled = 1e-3 }

-- the CPU's results, each computed once (the float32 ones are also the half cases' reference)
local cpu_runs = {}
local function on_cpu(precision, half_weights)
  local key = precision .. (half_weights and "/half" or "")
  cpu_runs[key] = cpu_runs[key] or pipeline("cpu", precision, half_weights)
  return cpu_runs[key]
end

-- dev's results against the CPU's; spread: the CPU's own distance to float32 (half precisions)
local function compare(precision, half_weights)
  local cpu = on_cpu(precision, half_weights)
  local dev = pipeline(DEV, precision, half_weights)
  local ref = precision ~= "fp32" and on_cpu("fp32", half_weights) or nil
  local bad = {}
  for _, k in ipairs(NAMES) do
    if dev[k].device ~= DEV then bad[#bad + 1] = k .. " came back on " .. dev[k].device end
    local bound = ref and (1e-3 + 2 * rel(cpu[k], ref[k])) or TOL32[k]
    local r = rel(dev[k], cpu[k])
    if not (r <= bound) then bad[#bad + 1] = ("%s: %.3g relative, over %.3g"):format(k, r, bound) end
  end
  if #bad > 0 then return table.concat(bad, "; ") end
end

case("fp32", function() return compare("fp32", false) end)
case("fp32, fp16 weights", function() return compare("fp32", true) end)
case("bf16 precision", function() return compare("bf16", false) end)
case("fp16 precision, fp16 weights", function() return compare("fp16", true) end)

if HALF then os.execute("rm -rf '" .. HALF .. "'") end
print(("deepfloyd on %s: %d passed, %d failed"):format(DEV, C.passed, C.failed))
os.exit(C.failed == 0 and 0 or 1)
