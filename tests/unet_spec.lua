-- tests for fdm.unet (lua/fdm/unet.lua): the Part B UNets of
-- shared/spec/fun-with-diffusion.md against the same models in PyTorch
-- (bench/torch_bench.py): parameter counts, state-dict names, train-mode
-- forward/backward and eval forward on tests/golden/unet_small.safetensors
-- (D = 8, batch 4), and the fused BatchNorm+GELU against the two ops.
local fdm = require "fdm"
local H = require "helpers"
local unet = require "fdm.unet"
local F = fdm.F

local GOLDEN = H.here("golden/unet_small.safetensors")
local TOL = { atol = 1e-4, rtol = 1e-4 }

-- Gradients deep in the net sum thousands of products through ~20
-- BatchNorm backwards: float32 noise scales with the tensor's magnitude, not
-- the element's. Measured: PyTorch's own float32 gradients differ from its
-- float64 ones by up to 4.7e-4 in uncond in_block.net.0.net.0.weight, whose
-- largest element is 162 (fdm's float32 is as close to float64 as PyTorch's).
-- So: atol 1e-4 + 1e-5 * max|expected| per tensor, rtol 1e-4.
local function scaled_tol(exp)
  local m = exp:abs():max():item()
  return { atol = 1e-4 + 1e-5 * m, rtol = 1e-4 }
end

local MAKERS = {
  uncond = function(D) return unet.UnconditionalUNet(1, D) end,
  tc = function(D) return unet.TimeConditionalUNet(1, D) end,
  cc = function(D) return unet.ClassConditionalUNet(1, D, 10) end,
}

describe("unet parameter counts (as PyTorch)", function()
  -- measured with `/usr/bin/python3 bench/torch_bench.py --count` (torch 1.13.0,
  -- sum(p.numel() for p in m.parameters())):
  --   COUNT uncond D=128 7891073   COUNT tc D=64 1996417   COUNT cc D=64 2019201
  --   COUNT uncond D=8   31433     COUNT tc D=8  31825     COUNT cc D=8  32433
  local cases = {
    { "uncond", 128, 7891073 }, { "tc", 64, 1996417 }, { "cc", 64, 2019201 },
    { "uncond", 8, 31433 }, { "tc", 8, 31825 }, { "cc", 8, 32433 },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. " D=" .. c[2], function()
      assert.are.equal(c[3], MAKERS[c[1]](c[2]):num_parameters())
    end)
  end

  it("the spec's reference sizes: 7.89 M unconditional D=128, about 2.0 M conditioned D=64", function()
    assert.is_true(math.abs(unet.UnconditionalUNet(1, 128):num_parameters() / 1e6 - 7.89) < 0.005)
    assert.is_true(math.abs(unet.ClassConditionalUNet(1, 64):num_parameters() / 1e6 - 2.0) < 0.05)
  end)
end)

describe("unet shapes and block structure", function()
  it("blocks map [N,C,H,W] as the spec's data flow", function()
    local x = fdm.randn(2, 3, 28, 28)
    assert.are.same({ 2, 5, 28, 28 }, unet.ConvBlock(3, 5)(x).shape)
    assert.are.same({ 2, 5, 14, 14 }, unet.DownBlock(3, 5)(x).shape)
    assert.are.same({ 2, 5, 56, 56 }, unet.UpBlock(3, 5)(x).shape)
    local e = fdm.randn(2, 4, 7, 7)
    local f = unet.Flatten()(e)
    assert.are.same({ 2, 4, 1, 1 }, f.shape)
    assert.are.same({ 2, 4, 7, 7 }, unet.Unflatten(4)(f).shape)
    assert.are.same({ 2, 6 }, unet.FCBlock(3, 6)(fdm.randn(2, 3)).shape)
  end)

  it("models give [N,1,28,28]; t as [N] or [N,1] is the same; a bad input size is an error", function()
    local x = fdm.randn(3, 1, 28, 28)
    local tc = unet.TimeConditionalUNet(1, 4):eval()
    local t = fdm.rand(3)
    local a = fdm.no_grad(function() return tc(x, t) end)
    local b = fdm.no_grad(function() return tc(x, t:reshape(3, 1)) end)
    assert.are.same({ 3, 1, 28, 28 }, a.shape)
    H.assert_close(a, b, { atol = 0, rtol = 0 })
    assert.has_error(function() unet.UnconditionalUNet(1, 4)(fdm.randn(1, 1, 32, 32)) end)
  end)

  it("class mask: 0 drops the class vector (same as c = 0)", function()
    local cc = unet.ClassConditionalUNet(1, 4):eval()
    local x, t = fdm.randn(2, 1, 28, 28), fdm.rand(2, 1)
    local c = F.one_hot(fdm.tensor({ 3, 7 }, { dtype = "int64" }), 10):float()
    local masked = fdm.no_grad(function() return cc(x, c, t, fdm.tensor({ 0, 1 })) end)
    local c0 = c:clone(); fdm.no_grad(function() c0[1]:zero_() end)
    local plain = fdm.no_grad(function() return cc(x, c0, t) end)
    H.assert_close(masked, plain, { atol = 1e-6, rtol = 0 })
    local m = unet.class_dropout_mask(1000, 0.1)
    local kept = m:sum():item()
    assert.is_true(kept > 850 and kept < 950, "kept " .. kept)
  end)
end)

describe("fused BatchNorm+GELU", function()
  local function check(training, shape)
    local x1 = fdm.randn(shape):requires_grad_()
    local x2 = x1:detach():clone():requires_grad_()
    local C = shape[2]
    local w1 = (fdm.rand(C) + 0.5):requires_grad_()
    local b1 = (fdm.randn(C) * 0.1):requires_grad_()
    local w2, b2 = w1:detach():clone():requires_grad_(), b1:detach():clone():requires_grad_()
    local rm1, rv1 = fdm.randn(C) * 0.1, fdm.rand(C) + 0.5
    local rm2, rv2 = rm1:clone(), rv1:clone()
    local y1 = F.batch_norm_gelu(x1, rm1, rv1, w1, b1, training, 0.1, 1e-5)
    local y2 = F.gelu(F.batch_norm(x2, rm2, rv2, w2, b2, training, 0.1, 1e-5))
    H.assert_close(y1, y2, { atol = 1e-5, rtol = 1e-5 }, "out")
    H.assert_close(rm1, rm2, { atol = 1e-6, rtol = 1e-6 }, "running_mean")
    H.assert_close(rv1, rv2, { atol = 1e-6, rtol = 1e-6 }, "running_var")
    local r = fdm.randn(shape)
    ;(y1 * r):sum():backward()
    ;(y2 * r):sum():backward()
    H.assert_close(x1.grad, x2.grad, { atol = 1e-4, rtol = 1e-4 }, "x.grad")
    H.assert_close(w1.grad, w2.grad, { atol = 1e-4, rtol = 1e-4 }, "weight.grad")
    H.assert_close(b1.grad, b2.grad, { atol = 1e-4, rtol = 1e-4 }, "bias.grad")
  end

  it("F.batch_norm_gelu == F.gelu(F.batch_norm(...)), training (batch stats), with grads", function()
    assert.is_function(F.batch_norm_gelu, "F.batch_norm_gelu missing")
    fdm.manual_seed(11)
    check(true, { 4, 6, 5, 7 })
  end)

  it("F.batch_norm_gelu == F.gelu(F.batch_norm(...)), eval (running stats), with grads", function()
    fdm.manual_seed(12)
    check(false, { 3, 5, 4, 4 })
  end)

  it("a UNet with the fused op equals the same UNet with the unfused ops", function()
    fdm.manual_seed(13)
    local a = unet.ClassConditionalUNet(1, 4)
    local b = unet.ClassConditionalUNet(1, 4)
    b:load_state_dict(a:state_dict())
    local x, t = fdm.randn(3, 1, 28, 28), fdm.rand(3)
    local c = F.one_hot(fdm.tensor({ 0, 5, 9 }, { dtype = "int64" }), 10):float()
    local saved = unet.fused
    local ya, yb
    local ok, err = pcall(function()
      unet.fused = true; ya = a(x, c, t)
      unet.fused = false; yb = b(x, c, t)
    end)
    unet.fused = saved
    assert(ok, err)
    H.assert_close(ya, yb, { atol = 1e-5, rtol = 1e-5 }, "out")
    ya:sum():backward(); yb:sum():backward()
    local pb = {}
    for _, e in ipairs(b:named_parameters()) do pb[e[1]] = e[2] end
    for _, e in ipairs(a:named_parameters()) do
      H.assert_close(e[2].grad, pb[e[1]].grad, { atol = 1e-4, rtol = 1e-4 }, "grad." .. e[1])
    end
    local bb = {}
    for _, e in ipairs(b:named_buffers()) do bb[e[1]] = e[2] end
    for _, e in ipairs(a:named_buffers()) do
      H.assert_close(e[2], bb[e[1]], { atol = 1e-6, rtol = 1e-6 }, e[1])
    end
  end)
end)

describe("unet against PyTorch (golden, D=8, batch 4)", function()
  -- tests/golden/unet_small.safetensors: `/usr/bin/python3 bench/torch_bench.py --export`
  local G
  local function golden()
    G = G or H.load_golden(GOLDEN)
    return G
  end

  local function run(tag, fused)
    local g = golden()
    local net = MAKERS[tag](8)
    local sd, n = {}, 0
    local prefix = "^" .. tag .. "%.sd%.(.+)$"
    for k, v in pairs(g) do
      local name = k:match(prefix)
      if name then sd[name] = v; n = n + 1 end
    end
    -- same names 1:1 (strict load: no missing, no unexpected key)
    assert.are.equal(#net:state_dict_keys(), n)
    net:load_state_dict(sd)
    local saved = unet.fused
    unet.fused = fused
    local ok, err = pcall(function()
      net:train()
      local x = g[tag .. ".x"]:clone():requires_grad_()
      local args = { x }
      if tag == "tc" then args[2] = g["tc.t"] end
      if tag == "cc" then args = { x, g["cc.c"], g["cc.t"], g["cc.mask"] } end
      local out = net(table.unpack(args))
      H.assert_close(out, g[tag .. ".out"], TOL, tag .. ".out")
      ;(out * g[tag .. ".r"]):sum():backward()
      local xg = g[tag .. ".x.grad"]
      H.assert_close(x.grad, xg, scaled_tol(xg), tag .. ".x.grad")
      for _, e in ipairs(net:named_parameters()) do
        local eg = g[tag .. ".grad." .. e[1]]
        local tol = scaled_tol(eg)
        -- a conv bias feeding a training-mode BatchNorm has a true gradient of
        -- exactly 0 (the batch mean removes it): both sides are rounding noise
        -- on the scale of the layer's weight gradient, so that sets atol
        local wg = e[1]:match("%.bias$") and g[tag .. ".grad." .. e[1]:gsub("%.bias$", ".weight")]
        if wg then tol.atol = math.max(tol.atol, scaled_tol(wg).atol) end
        H.assert_close(e[2].grad, eg, tol, tag .. ".grad." .. e[1])
      end
      for _, e in ipairs(net:named_buffers()) do
        H.assert_close(e[2], g[tag .. ".after." .. e[1]], TOL, tag .. ".after." .. e[1])
      end
      net:eval()
      args[1] = g[tag .. ".x"]
      local oe = fdm.no_grad(function() return net(table.unpack(args)) end)
      H.assert_close(oe, g[tag .. ".out_eval"], TOL, tag .. ".out_eval")
    end)
    unet.fused = saved
    assert(ok, err)
  end

  for _, tag in ipairs({ "uncond", "tc", "cc" }) do
    it(tag .. ": forward, parameter/input gradients, running stats, eval output (fused BN+GELU)", function()
      run(tag, true)
    end)
  end
  it("cc with the unfused BatchNorm, GELU", function() run("cc", false) end)
end)
