-- tests/int_nan_semantics_spec.lua: exact integer and NaN semantics (shape
-- products that would overflow, int64 arithmetic that wraps as PyTorch's
-- does, NaN that propagates) and the in-place guards. Run under `make test
-- SAN=1`, the overflow cases also prove there is no undefined behaviour.
local fdm = require "fdm"
local H = require "helpers"
local raises = H.raises

describe("integer and NaN semantics", function()
  it("shape products are checked, not overflowed", function()
    raises(function() return fdm.empty(4, 1 << 62, 1 << 62) end, "too large")
    raises(function() return fdm.ones(1, 1):expand(1 << 62, 1 << 62):sum() end, "too large")
    -- empty tensors too: their other sizes must still multiply within int64
    raises(function() return fdm.empty(0, 1 << 62, 1 << 62) end, "too large")
    raises(function() return fdm.randn(0):view(1 << 62, 4, 0) end, "invalid for a tensor of shape")
    assert.are.equal(0, fdm.empty(0, 1 << 31, 1 << 31):numel())
    assert.are.equal(0, fdm.randn(0):view(1 << 40, 4, 0):numel())
    raises(function() return fdm.randn(6):view(1 << 62, 1 << 62, -1) end, "invalid for a tensor of shape")
  end)

  it("expand and one_hot check their element counts; tolist refuses what it cannot build", function()
    raises(function() return fdm.ones(1, 1):expand(1 << 62, 4) end, "too large")
    assert.are.equal((1 << 31) * (1 << 31), fdm.ones(1, 1):expand(1 << 31, 1 << 31):numel())
    raises(function() return fdm.F.one_hot(fdm.tensor({ math.maxinteger }, { dtype = "int64" })) end, "no room")
    raises(function() return fdm.zeros(1 << 62, 0):tolist() end, "would make more than")
    assert.are.equal(3, #fdm.zeros(3, 0):tolist())
  end)

  it("int64 arithmetic wraps around as in PyTorch", function()
    local big = fdm.tensor({ math.maxinteger, 1 }, { dtype = "int64" })
    assert.are.equal(math.mininteger, big:sum():item())
    local m = fdm.tensor({ math.mininteger }, { dtype = "int64" })
    assert.are.equal(math.mininteger, m:abs():item())
    assert.are.equal(math.mininteger, (-m):item())
    assert.are.equal(math.mininteger, (fdm.tensor({ math.maxinteger }, { dtype = "int64" }) + 1):item())
    local sq = fdm.tensor({ 1 << 32 }, { dtype = "int64" })
    assert.are.equal(0, (sq * sq):item())
  end)

  it("randint covers the whole int64 range without overflow", function()
    local r = fdm.randint(math.mininteger, math.maxinteger, { 1000 })
    local lo, hi = math.maxinteger, math.mininteger
    for _, v in ipairs(r:tolist()) do lo = math.min(lo, v); hi = math.max(hi, v) end
    assert.is_true(lo < -(1 << 60) and hi > (1 << 60), ("range %d..%d"):format(lo, hi))
  end)

  it("NaN propagates through relu and quantile (a diverging run shows)", function()
    local r = fdm.F.relu(fdm.tensor({ 0 / 0, -1, 2 })):tolist()
    assert.is_true(r[1] ~= r[1])
    assert.are.same({ 0, 2 }, { r[2], r[3] })
    local q = fdm.tensor({ 0 / 0, 1 / 0, -1 / 0, 1 }):quantile(0.5):item()
    assert.is_true(q ~= q, "quantile with a NaN gave " .. tostring(q))
    local rows = fdm.tensor({ { 1, 0 / 0, 3 }, { 1, 2, 3 } }):quantile(0.5, 2):tolist()
    assert.is_true(rows[1] ~= rows[1])
    assert.are.equal(2, rows[2])
  end)

  it("copy_ and other in-place ops into an expanded (overlapping) view are refused", function()
    local t = fdm.zeros(1, 3):expand(2, 3)
    raises(function() t:copy_(fdm.ones(2, 3)) end, "expanded view")
    raises(function() t:add_(1) end, "expanded view")
    raises(function() t:fill_(1) end, "expanded view")
    -- a plain view is fine
    local u = fdm.zeros(2, 3)
    u:narrow(1, 2, 1):copy_(fdm.ones(1, 3))
    assert.are.equal(3, u:sum():item())
  end)
end)
