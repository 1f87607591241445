-- bench/conv_shapes.lua: 3x3 stride-1 padding-1 convolutions (C = K) timed
-- by shape on the CPU, float32, best of 3 after a warm-up. The environment
-- picks the algorithm: default (Winograd where it has enough tiles, else
-- im2col), FDM_NO_WINOGRAD=1 (im2col), FDM_WINOGRAD_TILE=2|4 (Winograd
-- forced). PERFORMANCE.md, "DeepFloyd IF on the CPU", compares them.
--   ./build/fdm bench/conv_shapes.lua 832:8:2,576:16:2 [back] [torch]    (C:map:N, ...)
-- "back" times forward and backward (input and weight gradients) together;
-- "torch" also runs bench/torch_conv_shapes.py (PyTorch, 2 threads) on the
-- same shapes and prints fdm's speed over PyTorch's per shape.
local fdm = require "fdm"
local F = fdm.F
local shapes = {}
for spec in (arg[1] or "832:8:2,576:16:2,384:32:2,192:64:2"):gmatch("[^,]+") do
  local c, hw, n = spec:match("^(%d+):(%d+):(%d+)$")
  if not c then
    io.stderr:write(("conv_shapes: expected C:MAP:N (e.g. 832:8:2), got '%s'\n"):format(spec))
    os.exit(2)
  end
  shapes[#shapes + 1] = { tonumber(c), tonumber(hw), tonumber(n) }
end
local back, with_torch = false, false
for i = 2, #arg do
  if arg[i] == "back" then back = true
  elseif arg[i] == "torch" then with_torch = true
  else io.stderr:write(("conv_shapes: expected 'back' or 'torch', got '%s'\n"):format(arg[i])); os.exit(2) end
end
local torch_ms = {}
if with_torch then
  local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
  torch_ms = dofile(here .. "/torch_shapes.lua")("conv_shapes", here .. "/torch_conv_shapes.py",
    (arg[1] or "832:8:2,576:16:2,384:32:2,192:64:2") .. (back and " back" or ""))
end
for _, s in ipairs(shapes) do
  local C, HW, N = s[1], s[2], s[3]
  local x = fdm.randn(N, C, HW, HW)
  local w = fdm.randn(C, C, 3, 3) * 0.01
  local b = fdm.zeros(C)
  if back then x:requires_grad_() end
  local best = math.huge
  local reps = math.max(1, math.floor(2e9 / (2 * N * C * C * 9 * HW * HW)))
  for r = 1, 4 do
    local t0 = fdm.time()
    for _ = 1, reps do
      if back then
        F.conv2d(x, w, b, { padding = 1 }):sum():backward()
      else
        fdm.no_grad(function() return F.conv2d(x, w, b, { padding = 1 }) end)
      end
    end
    local dt = (fdm.time() - t0) / reps
    if r > 1 and dt < best then best = dt end
    collectgarbage()
  end
  local fl = 2 * N * C * C * 9 * HW * HW * (back and 3 or 1)
  local tm = torch_ms[C .. ":" .. HW .. ":" .. N]
  print(("C=K=%4d %3dx%-3d N=%3d  %8.2f ms  %6.1f GFLOP/s%s%s"):format(C, HW, HW, N, best * 1e3, fl / best / 1e9,
    back and " (forward + both gradients)" or "",
    tm and ("   PyTorch %8.2f ms   fdm/torch %.2fx"):format(tm, tm / (best * 1e3)) or ""))
end
