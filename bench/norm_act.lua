-- bench/norm_act.lua: a diffusion ResNet block's normalisation,
-- gelu(group_norm(x) * scale + shift) with 32 groups and per-(n, c) scale and
-- shift, timed by shape on the CPU without gradients (inference): the four
-- ops one after the other against F.group_norm_act's fused kernel, best of 3
-- after a warm-up. "torch" also runs bench/torch_norm_act.py (PyTorch, 2
-- threads, the four ops) on the same shapes and prints the ratios.
--   ./build/fdm bench/norm_act.lua [C:MAP:N,...] [torch]     (default: IF-II-M's 128:256:2,256:128:2,384:64:2)
local fdm = require "fdm"
local F = fdm.F
local spec_arg = arg[1] or "128:256:2,256:128:2,384:64:2"
local with_torch = false
for i = 2, #arg do
  if arg[i] == "torch" then with_torch = true
  else io.stderr:write(("norm_act: expected 'torch', got '%s'\n"):format(arg[i])); os.exit(2) end
end
local shapes = {}
for spec in spec_arg:gmatch("[^,]+") do
  local c, hw, n = spec:match("^(%d+):(%d+):(%d+)$")
  if not c or tonumber(c) % 32 ~= 0 then
    io.stderr:write(("norm_act: expected C:MAP:N with C a multiple of 32 (e.g. 128:256:2), got '%s'\n"):format(spec))
    os.exit(2)
  end
  shapes[#shapes + 1] = { tonumber(c), tonumber(hw), tonumber(n) }
end
local torch_ms = {}
if with_torch then
  local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
  torch_ms = dofile(here .. "/torch_shapes.lua")("norm_act", here .. "/torch_norm_act.py", spec_arg)
end

local function best_of(f)
  local best = math.huge
  for r = 1, 4 do
    local t0 = fdm.time()
    f()
    local dt = fdm.time() - t0
    if r > 1 and dt < best then best = dt end
    collectgarbage()
  end
  return best * 1e3
end

fdm.no_grad(function()
  for _, s in ipairs(shapes) do
    local C, HW, N = s[1], s[2], s[3]
    local x, w, b = fdm.randn(N, C, HW, HW), fdm.randn(C), fdm.randn(C)
    local sc, sh = fdm.randn(N, C, 1, 1) + 1, fdm.randn(N, C, 1, 1)
    local four = best_of(function() return F.gelu(F.group_norm(x, 32, w, b, 1e-5) * sc + sh) end)
    local fused = best_of(function() return F.group_norm_act(x, 32, w, b, 1e-5, { scale = sc, shift = sh, act = "gelu" }) end)
    local gb = 2 * x:numel() * 4 / 1e9   -- one read and one write of x: the least any implementation moves
    local tm = torch_ms[C .. ":" .. HW .. ":" .. N]
    print(("C=%4d %3dx%-3d N=%d  four ops %7.2f ms  fused %7.2f ms (%.1fx, %.1f GB/s)%s"):format(C, HW, HW, N, four,
      fused, four / fused, gb / (fused / 1e3),
      tm and ("  PyTorch %7.2f ms  fdm fused/torch %.2fx"):format(tm, tm / fused) or ""))
  end
end)
