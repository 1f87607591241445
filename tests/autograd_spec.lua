-- tests/autograd_spec.lua: the reverse-mode tape.
local fdm = require "fdm"
local H = require "helpers"
local F = fdm.F

local function leaf(t) return fdm.tensor(t, { requires_grad = true }) end
local function close(got, exp, label) H.assert_close(got, exp, { atol = 1e-5, rtol = 1e-5 }, label) end
local function raises(f, ...)
  local ok, err = pcall(f)
  assert(not ok, "expected an error, got success")
  err = tostring(err)
  for _, s in ipairs { ... } do
    assert(err:lower():find(s:lower(), 1, true), string.format("error message %q does not contain %q", err, s))
  end
  return err
end

describe("autograd", function()
  it("leaves and results: requires_grad, is_leaf, grad_fn", function()
    local x = leaf({ 1, 2, 3 })
    assert.is_true(x.requires_grad)
    assert.is_true(x.is_leaf)
    assert.is_nil(x.grad_fn)
    assert.is_nil(x.grad)
    local y = x * 2
    assert.is_true(y.requires_grad)
    assert.is_false(y.is_leaf)
    assert.are.equal("string", type(y.grad_fn))
    local c = fdm.tensor({ 1, 2 })
    assert.is_false(c.requires_grad)
    assert.is_false((c * 2).requires_grad)
    local r = fdm.ones(2):requires_grad_()
    assert.is_true(r.requires_grad)
    assert.is_true(fdm.ones(2, { requires_grad = true }).requires_grad)
  end)

  it("simple chain: d/dx sum(3x^2 + 1) = 6x", function()
    local x = leaf({ 1, -2, 0.5 })
    ;((x * x) * 3 + 1):sum():backward()
    close(x.grad, { 6, -12, 3 })
  end)

  it("backward accumulates into leaves across calls", function()
    local x = leaf({ 1, 2 })
    ;(x * 3):sum():backward()
    close(x.grad, { 3, 3 })
    ;(x * x):sum():backward()
    close(x.grad, { 5, 7 })
  end)

  it("shared subexpressions: x*x + x and a reused intermediate", function()
    local x = leaf({ 1, 2, 3 })
    ;(x * x + x):sum():backward()
    close(x.grad, { 3, 5, 7 })

    local a = leaf({ 0.5, -1 })
    local s = fdm.sin(a)                     -- used three times
    local y = s * s + s * 2 + fdm.exp(s)
    y:sum():backward()
    local av = H.flat(a:detach())
    local exp = {}
    for i, v in ipairs(av) do
      local sv = math.sin(v)
      exp[i] = (2 * sv + 2 + math.exp(sv)) * math.cos(v)
    end
    close(a.grad, exp)
  end)

  it("several leaves, broadcasting reduces gradients to the leaf shapes", function()
    local a = leaf({ { 1, 2, 3 }, { 4, 5, 6 } })
    local b = leaf({ 10, 20, 30 })
    local c = leaf(2)
    ;((a * b) + c):sum():backward()
    close(a.grad, { 10, 20, 30, 10, 20, 30 })
    close(b.grad, { 5, 7, 9 })
    close(c.grad, { 6 })
    assert.are.same({ 3 }, { b.grad.shape[1] })
    assert.are.equal(0, c.grad:dim())
  end)

  it("gradients flow through views and copying ops", function()
    local x = leaf({ { 1, 2, 3 }, { 4, 5, 6 } })
    -- x:t():narrow(1, 2, 2) = columns 2..3 of x as rows; x[1]:narrow(1, 1, 2) = x[1][1..2]
    local y = fdm.cat({ x:t():narrow(1, 2, 2), x[1]:narrow(1, 1, 2):unsqueeze(1) }, 1)   -- [3, 2]
    ;(y * fdm.tensor({ { 1, 2 }, { 3, 4 }, { 5, 6 } })):sum():backward()
    close(x.grad, { 5, 7, 3, 0, 2, 4 })
  end)

  it("no_grad records nothing and returns the function's results", function()
    local x = leaf({ 1, 2 })
    assert.is_true(fdm.is_grad_enabled())
    local y, k = fdm.no_grad(function()
      assert.is_false(fdm.is_grad_enabled())
      return x * 2, 42
    end)
    assert.is_true(fdm.is_grad_enabled())
    assert.are.equal(42, k)
    assert.is_false(y.requires_grad)
    assert.is_nil(y.grad_fn)
  end)

  it("no_grad restores grad mode after an error", function()
    local ok = pcall(fdm.no_grad, function() error("boom") end)
    assert.is_false(ok)
    assert.is_true(fdm.is_grad_enabled())
  end)

  it("detach cuts the graph", function()
    local x = leaf({ 1, 2 })
    local d = (x * 2):detach()
    assert.is_false(d.requires_grad)
    assert.is_nil(d.grad_fn)
    local y = (x * d):sum()             -- d is a constant: dy/dx = d
    y:backward()
    close(x.grad, { 2, 4 })
  end)

  it("zero_grad sets .grad to nil", function()
    local x = leaf({ 1, 2 })
    ;(x * 2):sum():backward()
    assert.is_not_nil(x.grad)
    x:zero_grad()
    assert.is_nil(x.grad)
    ;(x * 5):sum():backward()
    close(x.grad, { 5, 5 })
  end)

  it("backward twice through the same graph is an error", function()
    local x = leaf({ 1, 2 })
    local loss = (fdm.exp(x) * x):sum()
    loss:backward()
    local err = raises(function() loss:backward() end)
    assert.is_truthy(err:lower():find("backward"), err)
  end)

  it("in-place ops on tensors that require grad are refused (allowed in no_grad)", function()
    local x = leaf({ 1, 2 })
    raises(function() x:add_(1) end, "add", "requires grad")
    raises(function() x:mul_(2) end)
    raises(function() x:fill_(0) end)
    local y = x * 2
    raises(function() y:add_(1) end)
    fdm.no_grad(function() x:add_(1) end)
    close(x:detach(), { 2, 3 })
  end)

  it("non-scalar backward needs a grad argument", function()
    local x = leaf({ 1, 2, 3 })
    local y = x * x
    raises(function() y:backward() end)
    local z = x * x
    z:backward(fdm.tensor({ 1, 0.5, -1 }))
    close(x.grad, { 2, 2, -6 })
  end)

  it("backward on a tensor that does not require grad is an error", function()
    raises(function() fdm.tensor({ 1, 2 }):sum():backward() end)
  end)

  it("leaves that do not take part get no grad; non-leaves keep none", function()
    local a, b = leaf({ 1 }), leaf({ 2 })
    local m = a * 3
    ;(m * 2):sum():backward()
    close(a.grad, { 6 })
    assert.is_nil(b.grad)
  end)

  it("gradient through nn ops reaches all parameters", function()
    fdm.manual_seed(3)
    local x = fdm.randn(2, 3, 5, 5)
    local w = fdm.randn(4, 3, 3, 3):requires_grad_()
    local b = fdm.zeros(4, { requires_grad = true })
    local y = F.relu(F.conv2d(x, w, b, { padding = 1 }))
    local loss = F.mse_loss(y, fdm.zeros_like(y))
    loss:backward()
    assert.are.same({ 4, 3, 3, 3 }, { w.grad.shape[1], w.grad.shape[2], w.grad.shape[3], w.grad.shape[4] })
    assert.are.same({ 4 }, { b.grad.shape[1] })
    assert.is_true(w.grad:abs():sum():item() > 0)
  end)

  it("the tape is released by backward (fdm.memory drops)", function()
    collectgarbage(); collectgarbage()
    local x = fdm.randn(256, 256):requires_grad_()
    local base = fdm.memory()
    local loss
    do
      local h = fdm.exp(x)                 -- saves x / its output
      local h2 = fdm.sin(h) * h            -- saves more 256 KiB tensors
      loss = F.gelu(h2):sum()
    end
    collectgarbage(); collectgarbage()
    local with_tape = fdm.memory()
    assert.is_true(with_tape >= base + 2 * 256 * 256 * 4, "tape should hold saved tensors")
    loss:backward()
    collectgarbage(); collectgarbage()
    local after = fdm.memory()
    -- what may remain: x.grad (256 KiB) and loss itself (4 bytes)
    assert.is_true(after <= base + 256 * 256 * 4 + 64,
      string.format("memory before %d, with tape %d, after backward %d", base, with_tape, after))
  end)

  it("a graph dropped without backward is collected", function()
    collectgarbage(); collectgarbage()
    local x = fdm.randn(128, 128):requires_grad_()
    local base = fdm.memory()
    for _ = 1, 20 do
      local _ = (fdm.exp(x) * x):sum()
    end
    collectgarbage(); collectgarbage()
    assert.are.equal(base, fdm.memory())
  end)
end)
