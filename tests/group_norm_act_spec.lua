-- tests/group_norm_act_spec.lua: F.group_norm_act, act(group_norm(x) * scale
-- + shift). Its values against PyTorch (both paths) are in ops_spec's golden
-- cases, its device parity in tests/cuda/parity.lua. Here: the fused kernel
-- against the four ops on shapes the golden cases do not cover, which path
-- runs when, and the errors.
local fdm = require "fdm"
local H = require "helpers"
local F = fdm.F

local function composite(x, g, w, b, o)
  local h = F.group_norm(x, g, w, b, 1e-5)
  local bc = { x:size(1), x:size(2) }
  for _ = 3, x:dim() do bc[#bc + 1] = 1 end
  if o.scale then h = h * o.scale:reshape(table.unpack(bc)) end
  if o.shift then h = h + o.shift:reshape(table.unpack(bc)) end
  if o.act == "gelu" then h = F.gelu(h) elseif o.act == "silu" then h = F.silu(h) end
  return h
end

local function kernels_of(f)
  fdm.profile(true)
  f()
  fdm.profile(false)
  local names = {}
  for _, r in ipairs(fdm.profile_rows()) do names[r.kernel] = true end
  return names
end

describe("F.group_norm_act", function()
  after_each(function() fdm.profile(false) end)

  it("equals group_norm, mul, add and the activation (2-D to 5-D inputs, with and without each part)", function()
    fdm.manual_seed(3)
    local shapes = { { 3, 4 }, { 2, 6, 7 }, { 2, 8, 5, 9 }, { 1, 4, 3, 2, 5 }, { 2, 64, 16, 16 } }
    for _, s in ipairs(shapes) do
      local x = fdm.randn(table.unpack(s)) * 3 + 1
      local N, C = s[1], s[2]
      for _, act in ipairs { "gelu", "silu", "none" } do
        for _, parts in ipairs { { true, true }, { true, false }, { false, true }, { false, false } } do
          local o = { act = act, scale = parts[1] and fdm.randn(N, C) + 1 or nil, shift = parts[2] and fdm.randn(N, C) or nil }
          local w, b = fdm.randn(C), fdm.randn(C)
          local g = C % 2 == 0 and 2 or 1
          local got = fdm.no_grad(function() return F.group_norm_act(x, g, w, b, 1e-5, o) end)
          H.assert_close(got, composite(x, g, w, b, o), { atol = 1e-5, rtol = 1e-5 },
            ("shape %s act %s scale %s shift %s"):format(table.concat(s, "x"), act, tostring(parts[1]), tostring(parts[2])))
        end
      end
    end
  end)

  it("runs the fused kernel without gradients and the four ops with them", function()
    local x, w, b = fdm.randn(2, 4, 3, 3), fdm.randn(4), fdm.randn(4)
    local sc = fdm.randn(2, 4, 1, 1)
    local fused = kernels_of(function() F.group_norm_act(x, 2, w, b, 1e-5, { scale = sc, act = "gelu" }) end)
    assert.truthy(fused.group_norm_act_forward)
    assert.falsy(fused.group_norm_forward)
    x:requires_grad_()
    local y
    local ops = kernels_of(function() y = F.group_norm_act(x, 2, w, b, 1e-5, { scale = sc, act = "gelu" }) end)
    assert.truthy(ops.group_norm_forward and ops.binary and ops.unary)
    assert.falsy(ops.group_norm_act_forward)
    y:sum():backward()
    assert.are.same({ 2, 4, 3, 3 }, x.grad.shape)
    -- under no_grad a tensor that requires grad takes the fused kernel
    local nog = kernels_of(function() fdm.no_grad(function() F.group_norm_act(x, 2, w, b) end) end)
    assert.truthy(nog.group_norm_act_forward)
  end)

  it("defaults: eps 1e-5, no scale or shift, no activation (= group_norm)", function()
    local x, w, b = fdm.randn(2, 6, 4), fdm.randn(6), fdm.randn(6)
    H.assert_close(F.group_norm_act(x, 3, w, b), F.group_norm(x, 3, w, b), { atol = 1e-6, rtol = 1e-6 })
    H.assert_close(F.group_norm_act(x, 3), F.group_norm(x, 3), { atol = 1e-6, rtol = 1e-6 })
  end)

  it("refuses wrong shapes, activations and dtypes, saying what was expected", function()
    local x = fdm.randn(2, 8, 3, 3)
    H.raises(function() return F.group_norm_act(x, 4, nil, nil, 1e-5, { scale = fdm.randn(2, 4) }) end,
      "group_norm_act: scale has shape [2, 4], expected [2, 8] (or with trailing 1s) for input [2, 8, 3, 3]")
    H.raises(function() return F.group_norm_act(x, 4, nil, nil, 1e-5, { shift = fdm.randn(2, 8, 2) }) end,
      "group_norm_act: shift has shape [2, 8, 2], expected [2, 8]")
    H.raises(function() return F.group_norm_act(x, 4, nil, nil, 1e-5, { shift = fdm.randn(8) }) end,
      "group_norm_act: shift has shape [8], expected [2, 8]")
    H.raises(function() return F.group_norm_act(x, 4, nil, nil, 1e-5, { act = "relu" }) end,
      'group_norm_act: act must be "gelu", "silu" or "none", got relu')
    H.raises(function() return F.group_norm_act(x, 4, nil, nil, 1e-5, { act = {} }) end,
      'group_norm_act: act must be "gelu", "silu" or "none", got table')
    H.raises(function() return F.group_norm_act(x, 3) end,
      "group_norm_act: 8 channels are not divisible into 3 groups")
    H.raises(function() return F.group_norm_act(x, 4, fdm.randn(4)) end,
      "group_norm_act: weight has shape [4], expected [8]")
    H.raises(function() return F.group_norm_act(x:to("float16"), 4) end, "group_norm_act")
    H.raises(function() return F.group_norm_act(fdm.randn(8), 4) end, "expected input [N, C, ...], got [8]")
    H.raises(function() return F.group_norm_act(x, 4, nil, nil, 1e-5, 7) end, "table expected")
  end)
end)
