-- tests/rng_spec.lua: the counter-based generator (Philox4x32-10).
local fdm = require "fdm"
local H = require "helpers"

local function vals(t) return (H.flat(t)) end
local function equal_lists(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- repository root (helpers.lua lives in <root>/tests/)
local ROOT = H.here(""):gsub("/?tests/$", "")
if ROOT == "" then ROOT = "." end

describe("rng", function()
  it("same seed -> same numbers, for every generator", function()
    local draws = {
      function() return fdm.randn(1000) end,
      function() return fdm.rand(7, 13) end,
      function() return fdm.randint(-5, 5, { 300 }) end,
      function() return fdm.randperm(100) end,
      function() return fdm.randn_like(fdm.zeros(3, 4)) end,
      function() return fdm.rand_like(fdm.zeros(9)) end,
    }
    for k, d in ipairs(draws) do
      fdm.manual_seed(1234)
      local a = vals(d())
      fdm.manual_seed(1234)
      local b = vals(d())
      assert(equal_lists(a, b), "draw " .. k .. " differs after reseeding")
    end
  end)

  it("a sequence of draws replays after reseeding, and successive draws differ", function()
    fdm.manual_seed(5)
    local a1, a2 = vals(fdm.randn(50)), vals(fdm.rand(50))
    fdm.manual_seed(5)
    local b1, b2 = vals(fdm.randn(50)), vals(fdm.rand(50))
    assert.is_true(equal_lists(a1, b1) and equal_lists(a2, b2))
    local c1, c2 = vals(fdm.randn(50)), vals(fdm.randn(50))
    assert.is_false(equal_lists(c1, c2), "two successive draws are identical")
    assert.is_false(equal_lists(a1, c1))
  end)

  it("different seeds differ", function()
    fdm.manual_seed(1)
    local a = vals(fdm.randn(100))
    fdm.manual_seed(2)
    local b = vals(fdm.randn(100))
    local same = 0
    for i = 1, 100 do if a[i] == b[i] then same = same + 1 end end
    assert.is_true(same < 3, same .. " of 100 values equal for seeds 1 and 2")
    fdm.manual_seed(2 ^ 40 + 1)           -- large seeds are not truncated to 32 bits
    local c = vals(fdm.randn(100))
    assert.is_false(equal_lists(a, c), "seed 2^40+1 behaves like seed 1")
  end)

  it("element i of a draw does not depend on the draw's size", function()
    fdm.manual_seed(77)
    local a = vals(fdm.randn(10))
    fdm.manual_seed(77)
    local b = vals(fdm.randn(1001))
    for i = 1, 10 do assert.are.equal(a[i], b[i]) end
    fdm.manual_seed(77)
    local c = vals(fdm.rand(2, 5))
    fdm.manual_seed(77)
    local d = vals(fdm.rand(3, 5))
    for i = 1, 10 do assert.are.equal(c[i], d[i]) end
  end)

  it("randn: mean 0, std 1, tails of a normal over 1e6 samples", function()
    fdm.manual_seed(0)
    local x = fdm.randn(1000000)
    assert.are.equal("float32", x.dtype)
    local mean = x:mean():item()
    local std = ((x - mean) ^ 2):mean():sqrt():item()
    -- standard errors: mean 1e-3, std 7e-4; 5 sigma
    assert(math.abs(mean) < 5e-3, "randn mean " .. mean)
    assert(math.abs(std - 1) < 4e-3, "randn std " .. std)
    local tail = x:abs():gt(2):float():mean():item()      -- P(|x| > 2) = 0.0455
    assert(math.abs(tail - 0.0455) < 1.2e-3, "P(|x|>2) = " .. tail)
    local far = x:abs():gt(4):float():mean():item()       -- 6.3e-5
    assert(far > 1e-5 and far < 2e-4, "P(|x|>4) = " .. far)
    local skew = (x ^ 3):mean():item()
    assert(math.abs(skew) < 0.015, "third moment " .. skew)
    local finite = x:abs():lt(math.huge):all():item()
    assert.is_true(finite == true or finite == 1, "randn produced inf or NaN")
  end)

  it("randn: pinned values (the shared transform of kernels/common/philox.h, the same on every device)", function()
    -- the normal transform uses no libm, so these are the exact floats on
    -- the CPU and on CUDA; changing philox.h changes them (say so in a commit)
    fdm.manual_seed(0)
    local want = {0x1.fb766p-1, -0x1.d96d66p-1, -0x1.3c3742p-1, -0x1.eda352p-2, -0x1.3aa6ap-3, 0x1.7254d8p-3}
    local got = fdm.randn(6):tolist()
    for i = 1, 6 do assert.are.equal(want[i], got[i], "randn element " .. i) end
  end)

  it("rand: in [0, 1), uniform moments", function()
    fdm.manual_seed(9)
    local x = fdm.rand(1000000)
    assert.is_true(x:min():item() >= 0)
    assert.is_true(x:max():item() < 1)
    local mean = x:mean():item()
    local var = ((x - 0.5) ^ 2):mean():item()
    assert(math.abs(mean - 0.5) < 2e-3, "rand mean " .. mean)
    assert(math.abs(var - 1 / 12) < 1e-3, "rand var " .. var)
    local low = x:lt(0.1):float():mean():item()
    assert(math.abs(low - 0.1) < 2e-3, "P(x < 0.1) = " .. low)
  end)

  it("randint: int64 in [low, high), every value reached", function()
    fdm.manual_seed(3)
    local r = fdm.randint(-3, 4, { 20000 })
    assert.are.equal("int64", r.dtype)
    assert.are.same({ 20000 }, { r.shape[1] })
    local counts = {}
    for _, v in ipairs(vals(r)) do
      assert(math.type(v) == "integer" or v == math.floor(v), "non-integer " .. tostring(v))
      assert(v >= -3 and v < 4, "randint value " .. v .. " outside [-3, 4)")
      counts[v] = (counts[v] or 0) + 1
    end
    for v = -3, 3 do
      local c = counts[v] or 0
      assert(math.abs(c - 20000 / 7) < 300, "value " .. v .. " drawn " .. c .. " times of 20000")
    end
    local big = fdm.randint(0, 2 ^ 40, { 1000 })
    assert.is_true(big:max():item() > 2 ^ 32, "randint range above 2^32 is not reached")
    assert.are.same({ 2, 3 }, { fdm.randint(0, 5, { 2, 3 }).shape[1], fdm.randint(0, 5, { 2, 3 }).shape[2] })
  end)

  it("randperm is a permutation of 0..n-1", function()
    fdm.manual_seed(11)
    for _, n in ipairs { 1, 2, 10, 1000 } do
      local p = fdm.randperm(n)
      assert.are.equal("int64", p.dtype)
      local v = vals(p)
      assert.are.equal(n, #v)
      table.sort(v)
      for i = 1, n do assert.are.equal(i - 1, v[i]) end
    end
    local p = vals(fdm.randperm(1000))
    local fixed = 0
    for i = 1, #p do if p[i] == i - 1 then fixed = fixed + 1 end end
    assert.is_true(fixed < 10, "randperm(1000) left " .. fixed .. " elements in place")
  end)

  it("get_rng_state / set_rng_state reproduce a draw", function()
    fdm.manual_seed(21)
    fdm.randn(17)
    local s = fdm.get_rng_state()
    assert.are.equal("table", type(s))
    local a = vals(fdm.randn(64))
    local a2 = vals(fdm.randint(0, 100, { 8 }))
    fdm.randn(5)
    fdm.set_rng_state(s)
    local b = vals(fdm.randn(64))
    local b2 = vals(fdm.randint(0, 100, { 8 }))
    assert.is_true(equal_lists(a, b), "randn after set_rng_state differs")
    assert.is_true(equal_lists(a2, b2), "randint after set_rng_state differs")
    -- the state is a snapshot: drawing does not change a saved table
    local s2 = fdm.get_rng_state()
    fdm.randn(3)
    fdm.set_rng_state(s2)
    local c = vals(fdm.randn(4))
    fdm.set_rng_state(s2)
    assert.is_true(equal_lists(c, vals(fdm.randn(4))))
  end)

  it("results do not depend on the thread count", function()
    local script = [[
      local fdm = require "fdm"
      fdm.manual_seed(2024)
      local parts = { fdm.randn(300000), fdm.rand(200001), fdm.randint(0, 1000, { 100003 }):float(),
                      fdm.randperm(5000):float(), fdm.randn(64, 513) }
      local out = {}
      for _, t in ipairs(parts) do
        local flat = t:reshape(-1):tolist()
        local s, s2 = 0, 0
        for i = 1, #flat do s = s + flat[i] * (i % 97 + 1); s2 = s2 + flat[i] * flat[i] end
        out[#out + 1] = string.format("%.17g %.17g", s, s2)
      end
      io.write(table.concat(out, ";"))
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local env = string.format("LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' LUA_CPATH='%s/build/lua/?.so;%s/build/?.so;;'",
      ROOT, ROOT, ROOT, ROOT)
    local results = {}
    for _, n in ipairs { 1, 2, 4 } do
      local cmd = string.format("cd '%s' && OMP_NUM_THREADS=%d %s lua5.4 '%s' 2>&1", ROOT, n, env, path)
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      local ok = p:close()
      assert(ok, "subprocess failed: " .. out)
      results[n] = out
    end
    os.remove(path)
    assert.are.equal(results[1], results[2], "OMP_NUM_THREADS=1 vs 2")
    assert.are.equal(results[1], results[4], "OMP_NUM_THREADS=1 vs 4")
    assert.is_true(#results[1] > 20, "no checksum printed: " .. results[1])
  end)

  it("same numbers on every device", function()
    for _, dev in ipairs(H.devices()) do
      if dev ~= "cpu" then
        fdm.manual_seed(8)
        local a = vals(fdm.randn(1000))
        fdm.manual_seed(8)
        local b = vals(fdm.randn(1000, { device = dev }):to("cpu"))
        H.assert_close(b, a, { atol = 1e-6, rtol = 1e-6 }, "randn on " .. dev .. " vs cpu")
      end
    end
  end)
end)
