-- tests/tensor_spec.lua: creation, dtypes, views, printing, errors, in-place
-- ops, free() and memory flatness.
local fdm = require "fdm"
local H = require "helpers"
local raises = H.raises

local function vals(t) return (H.flat(t)) end
local function same(got, exp, msg)
  assert.are.same(exp, vals(got), msg)
end
local function shape(t)
  local s = {}
  for i = 1, #t.shape do s[i] = t.shape[i] end
  return s
end
-- asserts that f raises an error whose message contains every plain string given

describe("tensor creation", function()
  it("fdm.tensor from nested tables and numbers", function()
    local t = fdm.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
    assert.are.same({ 2, 3 }, shape(t))
    assert.are.equal("float32", t.dtype)
    assert.are.equal("cpu", t.device)
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 } }, t:tolist())
    local s = fdm.tensor(3.5)
    assert.are.equal(0, s:dim())
    assert.are.same({}, shape(s))
    assert.are.equal(3.5, s:item())
    assert.are.equal(1, s:numel())
    local i = fdm.tensor({ 1, 2 }, { dtype = "int64" })
    assert.are.equal("int64", i.dtype)
    assert.are.equal("integer", math.type(i[1]:item()))
  end)

  it("ragged nested tables are an error", function()
    assert.has_error(function() fdm.tensor({ { 1, 2 }, { 3 } }) end)
  end)

  it("zeros / ones / empty / full take varargs or a table", function()
    same(fdm.zeros(2, 3), { 0, 0, 0, 0, 0, 0 })
    same(fdm.zeros({ 2, 3 }), { 0, 0, 0, 0, 0, 0 })
    assert.are.same({ 2, 3 }, shape(fdm.zeros({ 2, 3 })))
    same(fdm.ones(4), { 1, 1, 1, 1 })
    assert.are.same({ 3, 1, 2 }, shape(fdm.empty(3, 1, 2)))
    same(fdm.full({ 2, 2 }, 7.5), { 7.5, 7.5, 7.5, 7.5 })
    local z = fdm.zeros(2, 2, { dtype = "int64" })
    assert.are.equal("int64", z.dtype)
    same(fdm.ones(3, { dtype = "bool" }), { 1, 1, 1 })
    assert.are.same({ 0 }, shape(fdm.zeros(0)))
    assert.are.equal(0, fdm.zeros(0):numel())
  end)

  it("arange excludes stop, linspace includes both ends", function()
    same(fdm.arange(5), { 0, 1, 2, 3, 4 })
    same(fdm.arange(2, 10, 3), { 2, 5, 8 })
    same(fdm.arange(1, 2, 0.25), { 1, 1.25, 1.5, 1.75 })
    same(fdm.arange(5, 0, -2), { 5, 3, 1 })
    same(fdm.linspace(0, 1, 5), { 0, 0.25, 0.5, 0.75, 1 })
    assert.are.equal(1, fdm.linspace(3, 7, 1):numel())
  end)

  it("*_like functions copy shape and dtype", function()
    local a = fdm.ones(2, 3, { dtype = "int64" })
    local z = fdm.zeros_like(a)
    assert.are.same({ 2, 3 }, shape(z))
    assert.are.equal("int64", z.dtype)
    same(fdm.ones_like(fdm.zeros(2)), { 1, 1 })
    same(fdm.full_like(fdm.zeros(3), 2.5), { 2.5, 2.5, 2.5 })
    assert.are.same({ 4, 2 }, shape(fdm.randn_like(fdm.zeros(4, 2))))
    assert.are.same({ 4, 2 }, shape(fdm.rand_like(fdm.zeros(4, 2))))
  end)

  it("size, dim, numel, #, stride, is_contiguous", function()
    local t = fdm.zeros(2, 3, 4)
    assert.are.equal(3, t:dim())
    assert.are.equal(24, t:numel())
    assert.are.equal(3, t:size(2))
    assert.are.equal(4, t:size(-1))
    assert.are.same({ 2, 3, 4 }, t:size())
    assert.are.equal(2, #t)
    assert.are.same({ 12, 4, 1 }, t:stride())
    assert.is_true(t:is_contiguous())
    local tt = t:transpose(1, 3)
    assert.are.same({ 4, 3, 2 }, shape(tt))
    assert.are.same({ 1, 4, 12 }, tt:stride())
    assert.is_false(tt:is_contiguous())
    assert.is_true(tt:contiguous():is_contiguous())
  end)
end)

describe("dtypes and conversion", function()
  it("float -> int64 truncates toward zero, int64 -> float is exact", function()
    local t = fdm.tensor({ 2.7, -2.7, 0.5, -0.5, 3 })
    local l = t:long()
    assert.are.equal("int64", l.dtype)
    same(l, { 2, -2, 0, 0, 3 })
    same(t:to("int64"), { 2, -2, 0, 0, 3 })
    local big = fdm.tensor({ 16777216, -5 }, { dtype = "int64" }):float()
    assert.are.equal("float32", big.dtype)
    same(big, { 16777216, -5 })
  end)

  it("bool and uint8 conversions", function()
    local t = fdm.tensor({ 0, 1.5, -2, 0 })
    local b = t:bool()
    assert.are.equal("bool", b.dtype)
    assert.are.same({ false, true, true, false }, b:tolist())
    same(b:float(), { 0, 1, 1, 0 })
    local u = fdm.tensor({ 0, 1, 200, 255 }):byte()
    assert.are.equal("uint8", u.dtype)
    same(u, { 0, 1, 200, 255 })
  end)

  it("float16: exact values round trip, round-to-nearest-even, overflow and subnormals", function()
    local exact = { 0, 1, -2, 0.5, 65504, -65504, 2 ^ -14, 2 ^ -24, 1 + 2 ^ -10, 1000.5 }
    local h = fdm.tensor(exact):half()
    assert.are.equal("float16", h.dtype)
    same(h:float(), exact)
    local cases = {
      { 1 + 2 ^ -11, 1 },                     -- tie -> even (mantissa 0)
      { 1 + 3 * 2 ^ -11, 1 + 2 ^ -9 },         -- tie -> even (mantissa 2)
      { 1 + 2 ^ -11 + 2 ^ -20, 1 + 2 ^ -10 },  -- above the tie
      { 65519, 65504 },                        -- below the overflow threshold
      { 65520, math.huge },                    -- rounds up to inf
      { -1e6, -math.huge },
      { 2 ^ -25, 0 },                          -- subnormal tie -> even (0)
      { 3 * 2 ^ -25, 2 ^ -23 },                -- subnormal tie -> even (2 * 2^-24)
      { 2 ^ -26, 0 },
      { 0.1, 0.0999755859375 },
    }
    local inp, exp = {}, {}
    for i, c in ipairs(cases) do inp[i], exp[i] = c[1], c[2] end
    local got = vals(fdm.tensor(inp):half():float())
    for i = 1, #cases do
      assert(got[i] == exp[i], string.format("half(%.17g): got %.17g, expected %.17g", inp[i], got[i], exp[i]))
    end
    local nan = vals(fdm.tensor({ 0 / 0 }):half():float())[1]
    assert.is_true(nan ~= nan, "NaN must stay NaN through float16")
  end)

  it("bfloat16: round-to-nearest-even", function()
    local cases = {
      { 1, 1 }, { -3.5, -3.5 },
      { 1 + 2 ^ -8, 1 },                      -- tie -> even
      { 1 + 3 * 2 ^ -8, 1 + 2 ^ -6 },         -- tie -> even
      { 1 + 2 ^ -8 + 2 ^ -20, 1 + 2 ^ -7 },   -- above the tie
      { 3.0e38, 2.9910723e38 },               -- largest values stay finite
      { 0.1, 0.10009765625 },
    }
    local inp, exp = {}, {}
    for i, c in ipairs(cases) do inp[i], exp[i] = c[1], c[2] end
    local b = fdm.tensor(inp):bfloat16()
    assert.are.equal("bfloat16", b.dtype)
    local got = vals(b:float())
    for i = 1, #cases do
      local e = H.f32(exp[i])
      if i ~= 6 then
        assert(got[i] == e, string.format("bfloat16(%.17g): got %.17g, expected %.17g", inp[i], got[i], e))
      else
        assert(got[i] < math.huge and got[i] > 2.9e38, "bfloat16(3e38) must stay finite, got " .. got[i])
      end
    end
  end)

  it("to() accepts dtypes and devices", function()
    local t = fdm.tensor({ 1.25, 2 })
    assert.are.equal("float16", t:to("float16").dtype)
    assert.are.equal("bfloat16", t:to("bfloat16").dtype)
    assert.are.equal("cpu", t:to("cpu").device)
    same(t:to("float16"):to("float32"), { 1.25, 2 })
  end)

  it("unknown dtype names are an error naming the dtype", function()
    raises(function() fdm.zeros(2, { dtype = "float99" }) end, "float99")
  end)
end)

describe("views share storage", function()
  it("view, reshape (contiguous), narrow, select, t[i], transpose", function()
    local a = fdm.zeros(3, 4)
    a:view(12):narrow(1, 2, 2):fill_(1)           -- elements 2, 3 (1-based)
    same(a[1], { 0, 1, 1, 0 })
    a:reshape(2, 6)[2]:fill_(2)                    -- second half
    same(a[3], { 2, 2, 2, 2 })
    a[2]:fill_(5)
    same(a, { 0, 1, 1, 0, 5, 5, 5, 5, 2, 2, 2, 2 })
    a:select(2, 4):fill_(9)                        -- last column
    same(a:select(2, 4), { 9, 9, 9 })
    a:transpose(1, 2)[1]:fill_(-1)                 -- first column through the transpose
    same(a, { -1, 1, 1, 9, -1, 5, 5, 9, -1, 2, 2, 9 })
    assert.are.equal(a:data_ptr(), a:view(12):data_ptr())
    assert.are.equal(a:data_ptr(), a:t():data_ptr())
  end)

  it("t[i] on a 1-D tensor is a 0-d tensor; # is the first dim", function()
    local v = fdm.arange(5)
    assert.are.equal(5, #v)
    assert.are.equal(0, v[3]:dim())
    assert.are.equal(2, v[3]:item())
    assert.are.equal(4, #fdm.zeros(4, 7))
  end)

  it("slice has an inclusive stop and an optional step", function()
    local t = fdm.arange(10)
    same(t:slice(1, 3, 5), { 2, 3, 4 })
    same(t:slice(1, 1, 10, 3), { 0, 3, 6, 9 })
    local m = fdm.arange(12):view(3, 4)
    same(m:slice(2, 2, 3), { 1, 2, 5, 6, 9, 10 })
    m:slice(1, 2, 3):fill_(0)
    same(m, { 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0 })
  end)

  it("expand, unsqueeze, squeeze, permute, flatten, detach are views", function()
    local a = fdm.tensor({ 1, 2, 3 })
    local e = a:unsqueeze(1):expand(2, 3)
    assert.are.same({ 2, 3 }, shape(e))
    assert.are.same({ 0, 1 }, e:stride())
    same(e, { 1, 2, 3, 1, 2, 3 })
    local b = fdm.zeros(2, 1, 3)
    assert.are.same({ 2, 3 }, shape(b:squeeze()))
    assert.are.same({ 2, 3 }, shape(b:squeeze(2)))
    assert.are.same({ 2, 1, 3 }, shape(b:squeeze(1)))     -- size 2: unchanged, like PyTorch
    local p = fdm.zeros(2, 3, 4):permute(3, 1, 2)
    assert.are.same({ 4, 2, 3 }, shape(p))
    assert.are.same({ 6, 4 }, shape(fdm.zeros(2, 3, 4):flatten(1, 2)))
    assert.are.same({ 24 }, shape(fdm.zeros(2, 3, 4):flatten()))
    local d = a:detach()
    d:fill_(4)
    same(a, { 4, 4, 4 })
  end)

  it("reshape copies only when it must; clone and contiguous copy", function()
    local a = fdm.zeros(2, 3)
    local tt = a:t():reshape(6)                    -- not viewable: a copy
    tt:fill_(1)
    same(a, { 0, 0, 0, 0, 0, 0 })
    local c = a:clone()
    c:fill_(3)
    same(a, { 0, 0, 0, 0, 0, 0 })
    assert.are_not.equal(a:data_ptr(), c:data_ptr())
    raises(function() a:t():view(6) end, "view")
  end)

  it("split and chunk return Lua tables", function()
    local parts = fdm.arange(7):split(3, 1)
    assert.are.equal(3, #parts)
    same(parts[3], { 6 })
    local ch = fdm.arange(12):view(2, 6):chunk(3, 2)
    assert.are.equal(3, #ch)
    assert.are.same({ 2, 2 }, shape(ch[2]))
    same(ch[2], { 2, 3, 8, 9 })
  end)
end)

describe("printing", function()
  it("2-D float tensors print like PyTorch", function()
    local s = tostring(fdm.tensor({ { 1, 2 }, { 3, 4 } }))
    assert.is_truthy(s:find("^tensor%(%[%[1%., 2%.%],\n        %[3%., 4%.%]%]"),
      "tostring gave " .. string.format("%q", s))
  end)
  it("1-D, scalars, int64 and bool", function()
    assert.is_truthy(tostring(fdm.tensor({ 1.5, -2 })):find("^tensor%(%[ ?1%.5000, %-2%.0000%]"),
      tostring(fdm.tensor({ 1.5, -2 })))
    assert.is_truthy(tostring(fdm.tensor(2.5)):find("^tensor%(2%.5000?%)"), tostring(fdm.tensor(2.5)))
    assert.is_truthy(tostring(fdm.tensor({ 1, 2, 3 }, { dtype = "int64" })):find("^tensor%(%[1, 2, 3%]"),
      tostring(fdm.tensor({ 1, 2, 3 }, { dtype = "int64" })))
    assert.is_truthy(tostring(fdm.tensor({ 1, 0 }):bool()):find("^tensor%(%[ ?True, False%]"),
      tostring(fdm.tensor({ 1, 0 }):bool()))
  end)
  it("mentions dtypes other than float32/int64 and requires_grad", function()
    assert.is_truthy(tostring(fdm.ones(2):half()):find("float16", 1, true), tostring(fdm.ones(2):half()))
    local s = tostring(fdm.ones(2, { requires_grad = true }))
    assert.is_truthy(s:find("requires_grad=True", 1, true), s)
  end)
  it("large tensors are summarized", function()
    local s = tostring(fdm.zeros(10000))
    assert.is_truthy(#s < 2000, "tostring of 10000 elements is " .. #s .. " chars")
    assert.is_truthy(s:find("...", 1, true), s)
  end)
end)

describe("errors name the op and the shapes or dtypes", function()
  it("matmul shape mismatch", function()
    local F = fdm.F
    local err = raises(function() F.matmul(fdm.zeros(2, 3), fdm.zeros(4, 5)) end, "matmul", "[2, 3]", "[4, 5]")
    assert.is_truthy(err:find("3 != 4", 1, true), err)
  end)
  it("broadcasting", function()
    raises(function() return fdm.zeros(2, 3) + fdm.zeros(4, 3) end, "[2, 3]", "[4, 3]")
    raises(function() return fdm.mul(fdm.zeros(2, 3), fdm.zeros(2)) end, "mul", "[2, 3]", "[2]")
    raises(function() return fdm.where(fdm.zeros(2):bool(), fdm.zeros(3), fdm.zeros(2)) end, "where")
  end)
  it("view/reshape with the wrong number of elements", function()
    raises(function() fdm.zeros(2, 3):view(4, 2) end, "view", "[2, 3]")
    raises(function() fdm.zeros(2, 3):reshape(7) end, "reshape", "[2, 3]")
  end)
  it("dims and indices out of range", function()
    raises(function() fdm.zeros(2, 3):sum(3) end, "sum")
    raises(function() fdm.zeros(2, 3):select(1, 3) end, "select")
    raises(function() fdm.zeros(2, 3):narrow(2, 2, 3) end, "narrow")
    raises(function() return fdm.zeros(2, 3)[3] end)
    raises(function() fdm.zeros(2, 3):transpose(1, 4) end, "transpose")
  end)
  it("nn ops check ranks and shapes", function()
    local F = fdm.F
    raises(function() F.conv2d(fdm.zeros(3, 4), fdm.zeros(2, 3, 3, 3)) end, "conv2d", "[3, 4]")
    raises(function() F.conv2d(fdm.zeros(1, 3, 5, 5), fdm.zeros(2, 4, 3, 3)) end, "conv2d")
    raises(function() F.linear(fdm.zeros(2, 3), fdm.zeros(4, 5)) end, "linear")
    raises(function() F.bmm(fdm.zeros(2, 3, 4), fdm.zeros(3, 4, 5)) end, "bmm")
    raises(function() fdm.cat({ fdm.zeros(2, 3), fdm.zeros(3, 4) }, 1) end, "cat")
    raises(function() fdm.stack({ fdm.zeros(2, 3), fdm.zeros(3, 2) }, 1) end, "stack")
  end)
  it("dtype errors", function()
    local F = fdm.F
    raises(function() F.cross_entropy(fdm.zeros(2, 3), fdm.zeros(2)) end, "cross_entropy", "float32")
    raises(function() fdm.where(fdm.zeros(2), fdm.zeros(2), fdm.zeros(2)) end, "where", "float32")
    raises(function() F.one_hot(fdm.zeros(3), 4) end, "one_hot", "float32")
    raises(function() F.conv2d(fdm.zeros(1, 1, 3, 3, { dtype = "int64" }), fdm.zeros(1, 1, 1, 1)) end, "conv2d")
  end)
  it("non-tensor arguments", function()
    raises(function() fdm.F.relu("x") end, "relu")
    raises(function() fdm.zeros(-1) end)
  end)
end)

describe("in-place ops", function()
  it("add_, sub_, mul_, div_, clamp_, fill_, zero_, copy_, lerp_", function()
    local a = fdm.tensor({ 1, 2, 3 })
    a:add_(1)
    same(a, { 2, 3, 4 })
    a:add_(fdm.tensor({ 1, 1, 1 }))
    same(a, { 3, 4, 5 })
    a:sub_(fdm.tensor({ 1, 2, 3 }))
    same(a, { 2, 2, 2 })
    a:mul_(fdm.tensor({ 1, 2, 3 }))
    same(a, { 2, 4, 6 })
    a:div_(2)
    same(a, { 1, 2, 3 })
    a:clamp_(1.5, 2.5)
    same(a, { 1.5, 2, 2.5 })
    a:fill_(7)
    same(a, { 7, 7, 7 })
    a:zero_()
    same(a, { 0, 0, 0 })
    local m = fdm.zeros(2, 3)
    m:copy_(fdm.tensor({ 1, 2, 3 }))               -- broadcasts
    same(m, { 1, 2, 3, 1, 2, 3 })
    m:copy_(fdm.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }, { dtype = "int64" }))   -- converts
    same(m, { 1, 2, 3, 4, 5, 6 })
    local l = fdm.tensor({ 0, 10 })
    l:lerp_(fdm.tensor({ 10, 20 }), 0.25)
    same(l, { 2.5, 12.5 })
  end)
  it("in-place through a view updates the base; in-place broadcasting into a smaller tensor fails", function()
    local a = fdm.zeros(2, 3)
    a[2]:add_(fdm.tensor({ 1, 2, 3 }))
    same(a, { 0, 0, 0, 1, 2, 3 })
    raises(function() fdm.zeros(3):add_(fdm.zeros(2, 3)) end, "add")
  end)
end)

describe("free and memory", function()
  it("using a tensor after t:free() is a clear error", function()
    local t = fdm.ones(100)
    t:free()
    local err = raises(function() return t + 1 end)
    assert.is_truthy(err:lower():find("free"), err)
    err = raises(function() return t:sum() end)
    assert.is_truthy(err:lower():find("free"), err)
    t:free()        -- a second free is harmless
  end)

  it("t:free() releases the storage now; <close> frees at the end of the scope", function()
    collectgarbage(); collectgarbage()
    local base = fdm.memory()
    local t = fdm.zeros(1024, 256)
    assert.is_true(fdm.memory() >= base + 1024 * 256 * 4)
    t:free()
    assert.is_true(fdm.memory() <= base, "memory after free: " .. fdm.memory() .. ", before: " .. base)
    do
      local c <close> = fdm.zeros(1024, 256)
      assert.is_true(fdm.memory() >= base + 1024 * 256 * 4)
    end
    assert.is_true(fdm.memory() <= base, "memory after <close>: " .. fdm.memory() .. ", before: " .. base)
  end)

  it("views keep the storage alive and do not count it twice", function()
    collectgarbage(); collectgarbage()
    local base = fdm.memory()
    local t = fdm.zeros(1000)
    local v = t:view(10, 100)
    local function near(want, label)
      local m = fdm.memory()
      assert(m >= want and m <= want + 96, label .. ": fdm.memory() = " .. m .. ", expected about " .. want)
    end
    near(base + 4000, "tensor and its view")
    t = nil
    collectgarbage(); collectgarbage()
    near(base + 4000, "view alone")
    same(v:sum(), { 0 })
    v = nil
    collectgarbage(); collectgarbage()
    assert.are.equal(base, fdm.memory())
  end)

  it("returns to baseline after a 200-iteration allocation loop", function()
    collectgarbage(); collectgarbage()
    local base = fdm.memory()
    for _ = 1, 200 do
      local x = fdm.randn(32, 32)
      local y = (x * 2 + 1):sum(1)
      local z = fdm.cat({ x, x }, 1):t():contiguous()
      local _ = y:sum():item() + z:numel()
    end
    collectgarbage(); collectgarbage()
    assert.are.equal(base, fdm.memory())
  end)

  it("the collector sees tensor bytes: a loop without collectgarbage stays flat", function()
    collectgarbage(); collectgarbage()
    local base, peak = fdm.memory(), 0
    for _ = 1, 600 do
      local x = fdm.zeros(256, 256)      -- 256 KiB each, 600 * 3 allocations = 450 MiB in all
      local y = x + 1
      local _ = y * 2
      peak = math.max(peak, fdm.memory() - base)
    end
    -- Lua's collector runs when the heap (tensor bytes included) has grown by
    -- about what is alive, so the bound follows what earlier specs left alive;
    -- a collector blind to tensor bytes would let all 450 MiB pile up
    local bound = math.max(64 * 1024 * 1024, base + 32 * 1024 * 1024)
    assert.is_true(peak < bound, "tensor memory grew by " .. peak // 1048576 .. " MiB without collectgarbage (alive at start: " .. base // 1048576 .. " MiB)")
    collectgarbage(); collectgarbage()
    assert.are.equal(base, fdm.memory())
  end)
end)
