-- tests/cuda/nn_edges.lua: the NN kernels' rarer paths on the GPU against the
-- CPU (tests/cuda/parity.lua has the common ones): run by fdm itself,
--   ./build/fdm tests/cuda/nn_edges.lua          (FDM_EDGES_DEVICE=fake: the test device)
-- conv_transpose2d with output_padding >= stride (the zero-padded relation
-- image of kernels/cuda/nn_conv_cudnn.cu), dilated/grouped convs with
-- float16/bfloat16 weights, interpolate's scale_factor path at a non-integer
-- scale, overlapping pools, batch norm in eval mode / without running stats
-- / with 70,000 channels, norms without affine parameters, softmax over a
-- middle axis with an all -inf column, a 9x9 blur, a half-weight linear.
-- Each case computes outputs and input gradients (of sum(out * r)) on the
-- device and on the CPU from the same inputs. Prints one line per failure
-- and a count; exits 1 on a failure, 0 with "skipped" without a device.
local fdm = require "fdm"
local F = fdm.F

local DEV = os.getenv("FDM_EDGES_DEVICE") or "cuda"
if DEV == "fake" and not fdm.supports("fake", "copy") then
  pcall(fdm.load_backend, os.getenv("FDM_FAKE_BACKEND") or "build/tests/fdm_fake_backend.so")
end
do
  local ok, err = pcall(fdm.zeros, { 1 }, { device = DEV })
  if not ok then
    print(("no %s device: skipped (%s)"):format(DEV, tostring(err)))
    os.exit(0)
  end
end

local passed, failed = 0, 0

local function truthy(v) return v == true or v == 1 end

-- |got - want| <= atol + rtol |want| everywhere, NaN exactly where the CPU has NaN
local function check(name, got, want, atol, rtol)
  got = got:to("cpu")
  if got.dtype ~= "float32" then got, want = got:float(), want:float() end
  local gnan, wnan = got:ne(got), want:ne(want)
  local excess = (got - want):abs() - (want:abs() * rtol + atol)
  excess = fdm.where(wnan, fdm.zeros_like(excess), excess)
  local worst = got:numel() > 0 and excess:max():item() or 0
  if not truthy(gnan:eq(wnan):all():item()) then
    failed = failed + 1
    print(("FAIL %s: NaN where the cpu has none, or none where it has"):format(name))
  elseif worst > 0 then
    failed = failed + 1
    print(("FAIL %s: max excess over tolerance %g"):format(name, worst))
  else
    passed = passed + 1
  end
end

-- fn(dev, inputs on dev) -> list of outputs; inputs: list of CPU tensors (float ones get grads)
local function case(name, tol, inputs, fn)
  local function run(dev)
    local xs = {}
    for i, t in ipairs(inputs) do
      local d = t:to(dev)
      if t.dtype == "float32" and t.requires_grad then d = d:detach():requires_grad_() end
      xs[i] = d
    end
    local outs = fn(dev, table.unpack(xs))
    local res = {}
    local loss
    fdm.manual_seed(7)
    for i, o in ipairs(outs) do
      res[#res + 1] = o:detach()
      if o.requires_grad then
        local r = fdm.randn(o.shape):to(dev)
        local l = (o * r):sum()
        loss = loss and (loss + l) or l
      end
    end
    if loss then
      loss:backward()
      for _, x in ipairs(xs) do if x.requires_grad and x.grad then res[#res + 1] = x.grad end end
    end
    return res
  end
  local ok, got = pcall(run, DEV)
  if not ok then failed = failed + 1; print(("FAIL %s on %s: %s"):format(name, DEV, tostring(got))); return end
  local want = run("cpu")
  if #got ~= #want then
    failed = failed + 1
    print(("FAIL %s: %d results on %s, %d on the cpu"):format(name, #got, DEV, #want))
    return
  end
  for i = 1, #want do check(("%s [%d]"):format(name, i), got[i], want[i], tol[1], tol[2]) end
end

local function randn(...) fdm.manual_seed(select("#", ...) * 31 + 5); return fdm.randn({ ... }) end
local function param(t) return t:requires_grad_() end
local CONV = { 2e-3, 2e-3 }   -- TF32 (FDM_TF32=1) would need ~1e-2; run strict float32
local F32 = { 1e-5, 1e-4 }

fdm.manual_seed(1)
case("conv_transpose2d output_padding >= stride (dilation 2, groups 2)", CONV,
  { param(randn(2, 4, 5, 6)), param(randn(4, 3, 3, 3) * 0.3), param(randn(6)) },
  function(_, x, w, b)
    return { F.conv_transpose2d(x, w, b, { stride = 1, dilation = 2, output_padding = 1, groups = 2, padding = 1 }) }
  end)
case("conv_transpose2d stride 2, output_padding 1, 4x4 (UpConv-like)", CONV,
  { param(randn(3, 8, 7, 7)), param(randn(8, 5, 4, 4) * 0.2), param(randn(5)) },
  function(_, x, w, b) return { F.conv_transpose2d(x, w, b, { stride = 2, padding = 1, output_padding = 1 }) } end)
case("conv_transpose2d 7x7 stride 7 from 1x1 (Unflatten)", CONV,
  { param(randn(4, 6, 1, 1)), param(randn(6, 6, 7, 7) * 0.2), param(randn(6)) },
  function(_, x, w, b) return { F.conv_transpose2d(x, w, b, { stride = 7 }) } end)
case("conv2d dilated, grouped, strided", CONV,
  { param(randn(2, 6, 13, 11)), param(randn(9, 2, 3, 3) * 0.3), param(randn(9)) },
  function(_, x, w, b) return { F.conv2d(x, w, b, { stride = { 2, 1 }, padding = { 2, 1 }, dilation = { 2, 1 }, groups = 3 }) } end)
case("conv2d 1 input channel, 1 output channel, batch 1", CONV,
  { param(randn(1, 1, 28, 28)), param(randn(1, 1, 3, 3)), param(randn(1)) },
  function(_, x, w, b) return { F.conv2d(x, w, b, { padding = 1 }) } end)
for _, dt in ipairs({ "float16", "bfloat16" }) do
  case("conv2d and conv_transpose2d with " .. dt .. " weights", CONV,
    { randn(2, 4, 9, 9), randn(6, 4, 3, 3):to(dt), randn(4, 6, 4, 4):to(dt) },
    function(_, x, w, wt)
      return fdm.no_grad(function()
        return { F.conv2d(x, w, nil, { padding = 2, dilation = 2 }), F.conv_transpose2d(x, wt, nil, { stride = 2, padding = 1 }) }
      end)
    end)
  case("linear with a " .. dt .. " weight (OUT 700)", CONV, { randn(33, 129), randn(700, 129):to(dt) },
    function(_, x, w) return fdm.no_grad(function() return { F.linear(x, w) } end) end)
end
case("linear float32, bias, gradients", CONV, { param(randn(5, 3, 17)), param(randn(11, 17)), param(randn(11)) },
  function(_, x, w, b) return { F.linear(x, w, b) } end)
case("interpolate scale_factor 1.5 (nearest, bilinear) and 2 (nearest)", F32, { param(randn(2, 3, 7, 10)) },
  function(_, x)
    return { F.interpolate(x, { scale_factor = 1.5 }), F.interpolate(x, { scale_factor = 1.5, mode = "bilinear" }),
             F.interpolate(x, { scale_factor = 2 }), F.interpolate(x, { size = { 5, 23 }, mode = "bilinear" }) }
  end)
case("max_pool2d overlapping 3x3/1 pad 1, avg_pool2d 3x3/2 pad 1", F32, { param(randn(2, 3, 9, 8)) },
  function(_, x)
    return { F.max_pool2d(x, 3, { stride = 1, padding = 1 }), F.avg_pool2d(x, 3, { stride = 2, padding = 1 }),
             F.avg_pool2d(x, 7) }
  end)
case("batch_norm eval (gradients through running stats)", { 1e-5, 1e-4 },
  { param(randn(4, 5, 6, 6)), randn(5), randn(5):abs() + 0.5, param(randn(5)), param(randn(5)) },
  function(_, x, rm, rv, w, b) return { F.batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5), F.batch_norm_gelu(x, rm, rv, w, b, false, 0.1, 1e-5) } end)
case("batch_norm training without running stats or affine, 2-D input", { 1e-5, 1e-4 }, { param(randn(37, 6) * 3 + 5) },
  function(_, x) return { F.batch_norm(x, nil, nil, nil, nil, true, 0.1, 1e-5) } end)
case("batch_norm_gelu training, running update (UNet shape)", { 1e-5, 1e-4 },
  { param(randn(16, 8, 14, 14) + 2), fdm.zeros(8), fdm.ones(8), param(randn(8)), param(randn(8)) },
  function(_, x, rm, rv, w, b) return { F.batch_norm_gelu(x, rm, rv, w, b, true, 0.1, 1e-5), rm, rv } end)
case("batch_norm with 70000 channels", { 1e-5, 1e-4 }, { param(randn(3, 70000)) },
  function(_, x) return { F.batch_norm(x, nil, nil, nil, nil, true, 0.1, 1e-5) } end)
case("group_norm and layer_norm without affine", { 1e-5, 1e-4 }, { param(randn(3, 6, 5, 7) * 2 + 1) },
  function(_, x) return { F.group_norm(x, 3, nil, nil, 1e-5), F.layer_norm(x, { 5, 7 }, nil, nil, 1e-5) } end)
case("softmax/log_softmax over a middle axis and the last", { 1e-6, 1e-5 }, { param(randn(3, 9, 5)) },
  function(_, x) return { F.softmax(x, 2), F.log_softmax(x, 2), F.softmax(x, 3), F.log_softmax(x, 1) } end)
case("softmax of all -inf rows and columns gives NaN", { 0, 0 }, { fdm.full({ 2, 4, 3 }, -math.huge) },
  function(_, x) return { F.softmax(x, 3), F.log_softmax(x, 3), F.softmax(x, 2), F.log_softmax(x, 1) } end)
case("gaussian_blur 9x9 sigma 3 and 3x7", { 1e-5, 1e-4 }, { param(randn(2, 2, 12, 17)) },
  function(_, x) return { F.gaussian_blur(x, 9, 3.0), F.gaussian_blur(x, { 3, 7 }, { 0.8, 2.0 }) } end)
case("one_hot", { 0, 0 }, { fdm.tensor({ { 0, 9, 3 }, { 4, 4, 1 } }, { dtype = "int64" }) },
  function(_, y) return { F.one_hot(y, 10) } end)

print(("nn_edges on %s: %d passed, %d failed"):format(DEV, passed, failed))
os.exit(failed == 0 and 0 or 1)
