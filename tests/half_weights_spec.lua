-- float16 / bfloat16 weights in linear and the convolutions: the kernels widen
-- the weight to float32 (linear: 256 output rows at a time), so the result must
-- equal the float32 op on the weight rounded to that dtype, up to float
-- summation order. Half weights get no gradient (they cannot require grad);
-- the input's gradient flows through them.
local fdm = require "fdm"
local F = fdm.F

local function rel_diff(a, b)
  local scale = b:abs():max():item()
  return (a - b):abs():max():item() / (scale > 0 and scale or 1)
end

local function as(t, dtype)
  if dtype == "float16" then return t:half() end
  return t:bfloat16()
end

for _, dtype in ipairs({ "float16", "bfloat16" }) do
  describe(dtype .. " weights", function()
    it("linear matches float32 on the rounded weight (several 256-row blocks, bias)", function()
      fdm.manual_seed(11)
      local x, w, b = fdm.randn(7, 40), fdm.randn(600, 40), fdm.randn(600)
      local wh = as(w, dtype)
      local y = F.linear(x, wh, b)
      assert.are.equal("float32", y.dtype)
      assert.is_true(rel_diff(y, F.linear(x, wh:float(), b)) < 1e-5)
    end)

    it("linear passes the input gradient through the half weight", function()
      fdm.manual_seed(12)
      local w = as(fdm.randn(300, 24), dtype)
      local x1 = fdm.randn(5, 24):requires_grad_()
      local x2 = fdm.tensor(x1:tolist(), { requires_grad = true })
      F.linear(x1, w):sum():backward()
      F.linear(x2, w:float()):sum():backward()
      assert.is_true(rel_diff(x1.grad, x2.grad) < 1e-5)
    end)

    it("conv2d matches float32 (winograd 3x3 and im2col strided paths)", function()
      fdm.manual_seed(13)
      local x, b = fdm.randn(2, 6, 9, 9), fdm.randn(8)
      for _, o in ipairs({ { padding = 1 }, { stride = 2, groups = 2 } }) do
        local wshape = o.groups and { 8, 3, 3, 3 } or { 8, 6, 3, 3 }
        local wh = as(fdm.randn(table.unpack(wshape)), dtype)
        local y = F.conv2d(x, wh, b, o)
        assert.is_true(rel_diff(y, F.conv2d(x, wh:float(), b, o)) < 1e-5)
      end
    end)

    it("conv2d data gradient and conv_transpose2d match float32", function()
      fdm.manual_seed(14)
      local wh = as(fdm.randn(4, 3, 3, 3), dtype)
      local x1 = fdm.randn(2, 3, 8, 8):requires_grad_()
      local x2 = fdm.tensor(x1:tolist(), { requires_grad = true })
      F.conv2d(x1, wh, nil, { padding = 1 }):sum():backward()
      F.conv2d(x2, wh:float(), nil, { padding = 1 }):sum():backward()
      assert.is_true(rel_diff(x1.grad, x2.grad) < 1e-5)
      local xt = fdm.randn(2, 4, 5, 5)
      local yt = F.conv_transpose2d(xt, wh, nil, { stride = 2 })
      assert.is_true(rel_diff(yt, F.conv_transpose2d(xt, wh:float(), nil, { stride = 2 })) < 1e-5)
    end)

    it("works under no_grad and leaves the weight without a gradient", function()
      local w = as(fdm.randn(3, 4), dtype)
      local y = fdm.no_grad(function() return F.linear(fdm.randn(2, 4), w) end)
      assert.are.same({ 2, 3 }, { y.shape[1], y.shape[2] })
      assert.is_false(w.requires_grad)
    end)

    it("half inputs are still refused", function()
      local ok, err = pcall(F.linear, as(fdm.randn(2, 4), dtype), fdm.randn(3, 4))
      assert.is_false(ok)
      assert.truthy(tostring(err):find("linear", 1, true))
    end)
  end)
end

describe("linear/conv weight dtypes", function()
  it("an integer weight is refused with the accepted dtypes named", function()
    local ok, err = pcall(F.linear, fdm.randn(2, 4), fdm.ones(3, 4):long())
    assert.is_false(ok)
    assert.truthy(tostring(err):find("linear: weight must be float32, float16 or bfloat16, got int64", 1, true))
  end)
end)
