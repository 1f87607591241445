-- The runtime's own services: allocator cache, clock, devices, fused Adam.
local fdm = require "fdm"

describe("runtime", function()
  it("reuses freed blocks and gives them back with empty_cache", function()
    collectgarbage(); collectgarbage()
    fdm.empty_cache()
    local live0, cached0 = fdm.memory()
    assert.are.equal(0, cached0)
    local t = fdm.zeros(1024, 1024)                 -- 4 MiB
    local p = t:data_ptr()
    t:free()
    local live1, cached1 = fdm.memory()
    assert.are.equal(live0, live1)
    assert.are.equal(4 * 1024 * 1024, cached1)
    local u = fdm.zeros(1024, 1024)                 -- same size: the same block comes back
    assert.are.equal(p, u:data_ptr())
    assert.are.same({ 0 }, { u:sum():item() })       -- and zeros() really zeroed it
    u:free()
    assert.are.equal(4 * 1024 * 1024, fdm.empty_cache())
    assert.are.equal(0, select(2, fdm.memory()))
  end)

  it("empties one device's cache with empty_cache(device); an unknown device is an error", function()
    collectgarbage(); collectgarbage()
    fdm.empty_cache()
    local t = fdm.zeros(256, 1024)                  -- 1 MiB
    t:free()
    assert.are.equal(1024 * 1024, select(2, fdm.memory()))
    if fdm.supports("fake", "copy") then assert.are.equal(0, fdm.empty_cache("fake")) end
    assert.are.equal(1024 * 1024, select(2, fdm.memory()))   -- another device's call left the CPU's cache
    assert.are.equal(1024 * 1024, fdm.empty_cache("cpu"))
    assert.are.equal(0, select(2, fdm.memory()))
    assert.has_error(function() fdm.empty_cache("tpu") end, "unknown device 'tpu' (devices: cpu, cuda)")
  end)

  it("has a monotonic clock with sub-millisecond resolution", function()
    local a = fdm.time()
    local b
    repeat b = fdm.time() until b ~= a
    assert.is_true(b > a and b - a < 1e-3)
  end)

  it("lists the devices it can use and refuses the others clearly", function()
    local devs = fdm.devices()
    assert.are.equal("cpu", devs[1])
    local has_cuda = false
    for _, d in ipairs(devs) do if d == "cuda" then has_cuda = true end end
    if not has_cuda then
      local ok, err = pcall(fdm.zeros, 2, 2, { device = "cuda" })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("cuda", 1, true))
      assert.truthy(tostring(err):find("not available", 1, true))
    end
    local ok, err = pcall(fdm.zeros, 2, { device = "tpu" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("unknown device 'tpu'", 1, true))
  end)

  it("adam_step_ matches the textbook update and checks its arguments", function()
    local p = fdm.tensor({ 1.0, -2.0, 3.0 })
    local g = fdm.tensor({ 0.5, 0.25, -1.0 })
    local m, v = fdm.zeros(3), fdm.zeros(3)
    fdm.adam_step_(p, g, m, v, { lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, step = 1 })
    -- first step: m_hat = g, v_hat = g^2, so p -= lr * sign(g) (up to eps)
    local want = { 1.0 - 0.1, -2.0 - 0.1, 3.0 + 0.1 }
    for i, x in ipairs(p:tolist()) do assert.is_true(math.abs(x - want[i]) < 1e-6) end
    assert.has_error(function() fdm.adam_step_(p, g, fdm.zeros(4), v, { step = 1 }) end)
    assert.has_error(function() fdm.adam_step_(p, g, m, v, { step = 0 }) end)
    local ok, err = pcall(fdm.adam_step_, p, fdm.zeros(4), m, v, { step = 2 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("adam_step_", 1, true))
  end)

  it("keeps resident memory flat over a training-like loop", function()
    collectgarbage(); collectgarbage()
    local base = fdm.memory()
    local w = fdm.randn(64, 64, { requires_grad = true })
    local peak = 0
    for _ = 1, 600 do
      local x = fdm.randn(256, 64)
      local loss = fdm.F.gelu(fdm.matmul(x, w)):square():mean()
      loss:backward()
      w:zero_grad()
      peak = math.max(peak, fdm.memory() - base)
    end
    -- ~0.25 MiB of tensors per step; the collector runs after 32 MiB of new
    -- Lua-held tensors or as many bytes as were alive at the last collection
    -- (whatever earlier specs keep, e.g. loaded data sets), so live memory is
    -- a sawtooth: measured 64 MiB at its top on an empty heap (also before the
    -- backend refactor). 600 steps allocate 150 MiB: a leak would pass the bound.
    local limit = math.max(80 * 1048576, base + 80 * 1048576)
    assert.is_true(peak < limit, ("peak %.1f MiB above the %.1f MiB alive before (bound %.1f MiB)"):format(
      peak / 1048576, base / 1048576, limit / 1048576))
  end)

  it("shows plain tables compactly in the REPL (fdm.repr)", function()
    assert.are.equal("{1, 4, 8, 8}", fdm.repr({ 1, 4, 8, 8 }))
    assert.are.equal('{betas = {0.9, 0.99}, lr = 0.001}', fdm.repr({ lr = 0.001, betas = { 0.9, 0.99 } }))
    assert.are.equal('{"a", {...}}', fdm.repr({ "a", { { 1 } } }, 1))
    local out = io.popen("printf 'fdm.zeros(2, 3).shape\\n' | " .. (os.getenv("FDM_BIN") or "build/fdm") .. " -i"):read("a")
    assert.are.equal("{2, 3}\n", out)
  end)

  it("index_select picks rows and scatters their gradient back", function()
    local x = fdm.arange(12):float():view(4, 3):requires_grad_()
    local idx = fdm.tensor({ 3, 0, 3 }, { dtype = "int64" })
    local y = x:index_select(1, idx)
    assert.are.same({ { 9, 10, 11 }, { 0, 1, 2 }, { 9, 10, 11 } }, y:tolist())
    local w = fdm.arange(9):float():view(3, 3)
    ;(y * w):sum():backward()
    assert.are.same({ { 3, 4, 5 }, { 0, 0, 0 }, { 0, 0, 0 }, { 6, 8, 10 } }, x.grad:tolist())
    local z = x:detach():index_select(2, fdm.tensor({ 2 }, { dtype = "int64" }))
    assert.are.same({ { 2 }, { 5 }, { 8 }, { 11 } }, z:tolist())
    local ok, err = pcall(fdm.index_select, x, 1, fdm.tensor({ 4 }, { dtype = "int64" }))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("index_select: index 4 out of range", 1, true))
    ok, err = pcall(fdm.index_select, x, 1, fdm.tensor({ 1 }))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("int64", 1, true))
  end)

  it("prints a summary line above a big tensor in the REPL", function()
    local bin = os.getenv("FDM_BIN") or "build/fdm"
    local out = io.popen("printf 'fdm.zeros(2, 1000)\\nfdm.ones(3)\\n' | " .. bin .. " -i"):read("a")
    assert.truthy(out:find("tensor shape=[2, 1000] dtype=float32 device=cpu min=0 max=0 mean=0", 1, true), out)
    assert.truthy(out:find("tensor([1., 1., 1.])", 1, true))
    assert.falsy(out:find("shape=[3]", 1, true))
  end)
end)


describe("fdm's modules that load on first use", function()
  it("fdm.diffusion, fdm.deepfloyd, ... are the modules require gives; other names stay nil", function()
    local fdm = require "fdm"
    for _, name in ipairs { "diffusion", "ddpm_model", "deepfloyd", "unet", "flow", "models", "weights", "checkpoint", "classifier", "train" } do
      assert.are.equal(require("fdm." .. name), fdm[name], name)
    end
    assert.is_nil(fdm.no_such_module)
    assert.is_nil(rawget(fdm, "no_such_module"))
  end)
end)
