-- tests/backend_spec.lua: the backend interface (runtime/backend, kernels/).
-- The fake device (tests/c/fake_backend.c, loaded by helpers.lua) runs the
-- CPU's kernels over memory of its own, so every op must give the CPU's
-- numbers bit for bit there; ops_spec.lua covers the golden op cases, this
-- file the ops that loop does not: random draws, Adam, gather,
-- index_select, batch_norm_gelu, a whole UNet training step, data movement,
-- and what happens when a device lacks a kernel.
local fdm = require "fdm"
local H = require "helpers"
local F = fdm.F

local have_fake = fdm.supports("fake", "copy")

local function same(a, b, label)
  local fa, fb = H.flat(a:to("cpu")), H.flat(b:to("cpu"))
  assert.are.equal(#fb, #fa, label .. ": sizes differ")
  for i = 1, #fa do
    if fa[i] ~= fb[i] and not (fa[i] ~= fa[i] and fb[i] ~= fb[i]) then
      error(("%s: element %d differs: %.9g on fake, %.9g on cpu"):format(label, i, fa[i], fb[i]), 2)
    end
  end
end

-- runs f(device) on both devices from the same seed and compares every tensor it returns
local function both(label, f)
  fdm.manual_seed(7)
  local c = table.pack(f("cpu"))
  fdm.manual_seed(7)
  local k = table.pack(f("fake"))
  assert(c.n > 0 and c.n == k.n, label .. ": no results to compare")
  for i = 1, c.n do
    assert.are.equal("fake", k[i].device, label .. ": result " .. i .. " left the fake device")
    same(k[i], c[i], label .. " result " .. i)
  end
end

describe("backend interface", function()
  it("the cpu has every kernel and answers supports()", function()
    assert.is_true(fdm.supports("cpu", "gemm"))
    assert.is_true(fdm.supports("cpu", "conv2d_forward"))
    assert.is_false(fdm.supports("cpu", "no_such_kernel"))
    local names = fdm.supports("cpu")
    assert.is_true(#names >= 45, "cpu kernels listed: " .. #names)
    H.raises(function() return fdm.supports("tpu") end, "unknown device 'tpu'")
  end)

  it("a plugin that is not one is refused clearly", function()
    H.raises(function() return fdm.load_backend("/nonexistent/plugin.so") end,
      "cannot load backend plugin '/nonexistent/plugin.so'")
  end)

  it("a plugin that refuses to register without a word is named as one built for another fdm", function()
    local dir = H.tmpdir()
    H.writeall(dir .. "/silent.c", "int fdm_backend_plugin_register(const void *host) { (void)host; return -1; }\n")
    local out, rc = H.sh(("cc -shared -fPIC -o '%s/silent.so' '%s/silent.c'"):format(dir, dir))
    assert(rc == 0, "cc failed: " .. tostring(out))
    H.raises(function() return fdm.load_backend(dir .. "/silent.so") end,
      "refused to register: built for another fdm (this one has plugin ABI")
  end)

  if not have_fake then
    it("has the fake device (make test builds it)", function() error("FDM_FAKE_BACKEND was not loaded") end)
    return
  end

  it("device_memory: nil and the reason where the device cannot say (the CPU; the fake without FDM_FAKE_MEMORY)", function()
    local a, why = fdm.device_memory("cpu")
    assert.is_nil(a)
    assert.are.equal("device 'cpu' does not report its memory", why)
    a, why = fdm.device_memory("fake")
    assert.is_nil(a)
    assert.truthy(tostring(why):find("set FDM_FAKE_MEMORY", 1, true), why)
    H.raises(function() return fdm.device_memory("tpu") end, "unknown device 'tpu'")
  end)

  it("lists the fake device once loaded", function()
    local devs = table.concat(fdm.devices(), ",")
    assert.truthy(devs:find("fake", 1, true), devs)
  end)

  it("random draws give the cpu's numbers on the fake device", function()
    both("rand", function(d) return fdm.rand(5, 7, { device = d }) end)
    both("randn", function(d) return fdm.randn(1001, { device = d }) end)
    both("randint", function(d) return fdm.randint(-3, 9, { 33 }, { device = d }) end)
    both("randint over all of int64", function(d)
      return fdm.randint(math.mininteger, math.maxinteger, { 9 }, { device = d })
    end)
    both("randperm", function(d) return fdm.randperm(77, { device = d }) end)
    both("dropout", function(d) return F.dropout(fdm.ones(64, { device = d }), 0.3, true) end)
    both("arange, linspace", function(d)
      return fdm.arange(0, 10, 0.5, { device = d }), fdm.linspace(-1, 1, 9, { device = d })
    end)
  end)

  it("gather, index_select and reductions, forward and backward", function()
    both("gather", function(d)
      local x = fdm.randn(4, 6, { device = d }):requires_grad_()
      local idx = fdm.tensor({ { 0, 5 }, { 1, 1 }, { 2, 0 }, { 5, 3 } }, { dtype = "int64", device = d })
      local y = fdm.gather(x, 2, idx)
      ;(y * y):sum():backward()
      return y, x.grad
    end)
    both("index_select", function(d)
      local x = fdm.randn(5, 3, { device = d }):requires_grad_()
      local y = fdm.index_select(x, 1, fdm.tensor({ 4, 0, 4 }, { dtype = "int64", device = d }))
      ;(y * 3):sum():backward()
      return y, x.grad
    end)
    both("max, var, quantile", function(d)
      local x = fdm.randn(6, 9, { device = d }):requires_grad_()
      local m, i = x:max(2)
      local loss = m:sum() + x:var(1):sum() + x:quantile(0.3, 2):sum()
      loss:backward()
      return m, i, x.grad
    end)
  end)

  it("batch_norm_gelu, forward and backward, with running statistics", function()
    both("batch_norm_gelu", function(d)
      local x = fdm.randn(3, 4, 5, 5, { device = d }):requires_grad_()
      local w = fdm.randn(4, { device = d }):requires_grad_()
      local b = fdm.randn(4, { device = d }):requires_grad_()
      local rm, rv = fdm.zeros(4, { device = d }), fdm.ones(4, { device = d })
      local y = F.batch_norm_gelu(x, rm, rv, w, b, true, 0.1, 1e-5)
      ;(y * y):sum():backward()
      return y, x.grad, w.grad, b.grad, rm, rv
    end)
  end)

  it("Adam steps give the cpu's parameters", function()
    both("adam", function(d)
      local p = fdm.randn(10, 3, { device = d }):requires_grad_()
      local opt = fdm.optim.Adam({ p }, { lr = 1e-2, weight_decay = 0.1 })
      for _ = 1, 3 do
        opt:zero_grad()
        ;((p * p):sum() + p:sum()):backward()
        opt:step()
      end
      return p:detach()
    end)
  end)

  it("a whole UNet training step (forward, loss, backward, Adam) matches the cpu", function()
    local unet = require "fdm.unet"
    both("unet step", function(d)
      local model = unet.ClassConditionalUNet(1, 4, 10):to(d)
      local opt = fdm.optim.Adam(model:parameters(), { lr = 1e-3 })
      local x = fdm.randn(2, 1, 28, 28, { device = d })
      local c = F.one_hot(fdm.tensor({ 3, 7 }, { dtype = "int64", device = d }), 10)
      local t = fdm.rand(2, 1, { device = d })
      local loss = F.mse_loss(model(x, c, t), x)
      loss:backward()
      opt:step()
      local first = model:parameters()[1]
      return loss:detach(), first:detach()
    end)
  end)

  it("moving data goes through the devices' copies, and memory is the fake's own", function()
    local before = fdm.backend_stats("fake")
    local a = fdm.randn(1000)
    local b = a:to("fake")
    local mid = fdm.backend_stats("fake")
    assert.are.equal(before.uploads + 1, mid.uploads)
    assert.is_true(mid.live_bytes >= before.live_bytes + 4000)
    assert.are.equal("fake", b.device)
    same(b, a, "round trip")
    assert.are.equal(a:sum():item(), b:sum():item())
    assert.is_true(fdm.backend_stats("fake").downloads > mid.downloads)
    b:free()
    collectgarbage(); collectgarbage()
    -- every block released was the fake's own (a wrong tag would be counted here)
    assert.are.equal(0, fdm.backend_stats("fake").cached_bytes)
  end)

  it("safetensors load into mapped memory the backend does not own, or straight to a device", function()
    local path = os.tmpname()
    local w = fdm.randn(64, 33)
    local h = fdm.randn(5):to("float16")
    fdm.io.save_safetensors(path, { w = w, h = h, i = fdm.arange(0, 7, 1, { dtype = "int64" }) })
    local live = fdm.memory()
    local m = fdm.io.load_safetensors(path, { mmap = true })
    same(m.w, w, "mapped w"); same(m.h, h, "mapped h")
    assert.are.equal("float16", m.h.dtype)
    -- mapped: the weights are not allocator memory
    assert.is_true(fdm.memory() - live < 64 * 33 * 4, "mapped tensors were copied")
    -- writes go to private pages, never to the file
    fdm.no_grad(function() m.w:mul_(0) end)
    assert.are.equal(0, m.w:abs():sum():item())
    same(fdm.io.load_safetensors(path).w, w, "file unchanged")
    m = nil
    collectgarbage(); collectgarbage()
    local before = fdm.backend_stats("fake")
    local d = fdm.io.load_safetensors(path, { device = "fake" })
    assert.are.equal("fake", d.w.device)
    assert.are.equal(before.uploads + 3, fdm.backend_stats("fake").uploads)
    same(d.w, w, "w on the fake device"); same(d.i, fdm.arange(0, 7, 1, { dtype = "int64" }), "i")
    os.remove(path)
  end)

  it("ops refuse tensors on different devices", function()
    H.raises(function() return fdm.ones(2) + fdm.ones(2, { device = "fake" }) end, "different devices (cpu and fake)")
  end)

  it("an op whose kernel the device lacks fails clearly and touches nothing", function()
    local code = [[
      local fdm = require "fdm"
      fdm.load_backend(os.getenv("FDM_FAKE_BACKEND"))
      local x = fdm.randn(3, 4, { device = "fake" })
      local idx = fdm.zeros(3, 1, { dtype = "int64", device = "fake" })
      print(fdm.supports("fake", "gather"), fdm.supports("fake", "copy"))
      print(pcall(fdm.gather, x, 2, idx))
      print(pcall(fdm.F.conv2d, fdm.randn(1, 1, 5, 5, { device = "fake" }), fdm.randn(1, 1, 3, 3, { device = "fake" })))
      print((x * 2):sum():item() == (x:to("cpu") * 2):sum():item())
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, "w")); f:write(code); f:close()
    local out, rc = H.sh("FDM_FAKE_WITHOUT=gather,conv2d_forward " .. os.getenv("FDM_BIN") .. " " .. path)
    os.remove(path)
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("false\ttrue", 1, true), out)
    assert.truthy(out:find("gather: not implemented on device 'fake' (its backend has no 'gather' kernel)", 1, true), out)
    assert.truthy(out:find("conv2d: not implemented on device 'fake' (its backend has no 'conv2d_forward' kernel)", 1, true), out)
    assert.truthy(out:find("\ntrue\n", 1, true), out)
  end)
end)

describe("autograd state", function()
  it("backward refuses a saved tensor changed in place since (version counters)", function()
    local w = fdm.randn(3):requires_grad_()
    local h = fdm.randn(3)
    local y = (w * h):sum()
    fdm.no_grad(function() h:add_(1) end)
    H.raises(function() y:backward() end, "modified by an inplace operation")
    -- unchanged: fine
    local y2 = (w * h):sum()
    y2:backward()
    H.assert_close(w.grad, h)
  end)

  it("an op's own saved output is watched too", function()
    local x = fdm.randn(4):requires_grad_()
    local y = x:exp()
    local z = y:sum()
    fdm.no_grad(function() y:mul_(2) end)
    H.raises(function() z:backward() end, "modified by an inplace operation")
  end)

  it("cat records any number of inputs", function()
    local parts = {}
    for i = 1, 40 do parts[i] = fdm.full({ 1 }, i):requires_grad_() end
    local y = fdm.cat(parts, 1)
    ;(y * y):sum():backward()
    for i = 1, 40 do assert.are.equal(2 * i, parts[i].grad:item()) end
  end)
end)

describe("fdm.profile", function()
  local function row(rows, op, kernel, dev)
    for _, r in ipairs(rows) do
      if r.op == op and r.kernel == kernel and r.device == dev then return r end
    end
  end
  after_each(function() fdm.profile(false) end)

  it("times each kernel call by op and kernel, most time first", function()
    local a, b = fdm.randn(96, 96), fdm.randn(96, 96)
    fdm.profile(true)
    local c = fdm.matmul(a, b)
    local d = c + a
    d = d + b
    fdm.profile(false)
    local rows = fdm.profile_rows()
    local mm, add = row(rows, "matmul", "gemm", "cpu"), row(rows, "add", "binary", "cpu")
    assert.truthy(mm, "no matmul/gemm row")
    assert.truthy(add, "no add/binary row")
    assert.are.equal(1, mm.calls)
    assert.are.equal(2, add.calls)
    assert.is_true(mm.seconds > 0 and add.seconds > 0)
    for i = 2, #rows do assert.is_true(rows[i - 1].seconds >= rows[i].seconds, "rows not sorted by time") end
  end)

  it("records nothing while off, and starting again clears the rows", function()
    local a = fdm.randn(8, 8)
    fdm.profile(true)
    local _ = a * 2
    fdm.profile(false)
    local _ = a * 3   -- off: not recorded
    assert.are.equal(1, row(fdm.profile_rows(), "mul", "binary", "cpu").calls)
    fdm.profile(true)
    assert.are.equal(0, #fdm.profile_rows())
  end)

  it("names the device of each row", function()
    if not have_fake then return end
    local x = fdm.randn(4, 4):to("fake")
    fdm.profile(true)
    local _ = x * x
    fdm.profile(false)
    assert.truthy(row(fdm.profile_rows(), "mul", "binary", "fake"))
  end)

  it("profile_report: a table of the rows, per step, the largest first, with the total", function()
    local a = fdm.randn(64, 64)
    fdm.profile(true)
    for _ = 1, 4 do local _ = fdm.matmul(a, a) + a end
    fdm.profile(false)
    local text, total, calls = fdm.profile_report({ per = 4, per_name = "step", top = 1 })
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.truthy(lines[1]:find("calls/step", 1, true), text)
    assert.truthy(lines[2]:match("^%a+%s+%a+%s+cpu%s+1%.0%s+[%d.]+%s+[%d.]+%%$"), text)   -- one call per step
    assert.truthy(lines[3]:find("(1 more rows)", 1, true), text)
    assert.truthy(lines[4]:match("^total%s+2%.0%s+"), text)
    assert.are.equal(2, calls)
    local sum = 0
    for _, r in ipairs(fdm.profile_rows()) do sum = sum + r.seconds end
    assert.is_true(math.abs(total - sum / 4) < 1e-12)
    assert.has_error(function() fdm.profile_report({ per = 0 }) end, "profile_report: per must be a positive number")
  end)

  it("wants a boolean", function()
    H.raises(function() fdm.profile("yes") end, "boolean expected")
  end)
end)
