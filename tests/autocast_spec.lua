-- Autocast (fdm.autocast, docs/api.md): conv2d, conv_transpose2d, linear and
-- matmul/bmm multiply operands rounded to bfloat16 (or float16) with float32
-- accumulation; outputs, parameters and gradients stay float32.
--
-- Golden values: tools/gen_autocast_golden.py (PyTorch 1.13,
-- torch.autocast("cpu", dtype=torch.bfloat16)). Tolerances, relative to the
-- largest element of the expected tensor:
--   REF_TOL 2e-6 against "ref", PyTorch's float32 op on the rounded operands:
--     the same products (a product of two bf16 numbers is exact in float32),
--     summed in another order (measured <= 1.8e-7, Winograd included); the
--     float32 op without autocast is >= 2e-3 away (checked: the test can fail).
--   against PyTorch's own autocast results (bf16 tensors): fdm's float32 result
--     rounded to bf16 must be within one bf16 ulp (2^-7 relative) of each
--     element, and identical for >= 90% of them (the rest sit on a rounding
--     boundary that summation order decides); the float32 op without autocast
--     is identical for fewer (checked). torch 1.13's CPU bf16 bmm does not
--     accumulate in float32 (the generator measured 0.8% of the largest
--     element): that one is checked to 1.5% only. Gradients of linear and bmm
--     from PyTorch's autocast are left out for the same reason (generator).
local fdm = require "fdm"
local H = require "helpers"
local F = fdm.F

local G, META = H.load_golden(H.here("golden/autocast_bf16.safetensors"))
local REF_TOL = 2e-6

-- the cases of tools/gen_autocast_golden.py
local CASES = {
  { "conv", "conv2d", { padding = 1 } },
  { "conv_wino", "conv2d", { padding = 1 } },
  { "conv_s2g2", "conv2d", { stride = 2, padding = { 1, 0 }, groups = 2 } },
  { "convt", "conv_transpose2d", { stride = 2, padding = 1, output_padding = 1 } },
  { "linear", "linear" },
  { "matmul", "matmul" },
  { "bmm", "matmul" },
}

local function run(op, opts, x, w, b)
  if op == "matmul" then return x:matmul(w) end
  return F[op](x, w, b, opts)
end

local rel = H.rel_max

local function bf16(t) return t:to("bfloat16"):float() end

-- a golden tensor on dev as a fresh leaf (to("cpu") returns the tensor itself: detach keeps G untouched)
local function on(dev, k) return G[k]:to(dev):detach() end

-- share of elements of bf16(got) equal to want; the largest |bf16(got) - want| in units of 2^-7 |want|
local function against_bf16(got, want)
  local r = bf16(got:to("cpu"))
  local same = fdm.eq(r, want):float():mean():item()
  local ulps = ((r - want):abs() / (want:abs() * 2 ^ -7 + 1e-30)):max():item()
  return same, ulps
end

-- forward and backward of one case on a device, under autocast dtype (nil: float32)
local function case_on(name, op, opts, dev, dtype)
  local function get(k) return G[name .. "." .. k] and on(dev, name .. "." .. k) end
  local x, w = get("x"):requires_grad_(), get("w"):requires_grad_()
  local b = get("b")
  local y = fdm.autocast(dtype, run, op, opts, x, w, b)
  y:backward(get("gy"))
  return y:to("cpu"), x.grad:to("cpu"), w.grad:to("cpu"), w
end

describe("autocast state", function()
  after_each(function() fdm.set_autocast(nil) end)

  it("set_autocast/get_autocast: names, aliases, off, the previous state returned", function()
    assert.is_nil(fdm.get_autocast())
    assert.is_nil(fdm.set_autocast("bf16"))
    assert.are.equal("bfloat16", fdm.get_autocast())
    assert.are.equal("bfloat16", fdm.set_autocast("half"))
    assert.are.equal("float16", fdm.get_autocast())
    assert.are.equal("float16", fdm.set_autocast(false))
    assert.is_nil(fdm.get_autocast())
    fdm.set_autocast("bfloat16")
    assert.are.equal("bfloat16", fdm.set_autocast(nil))
    assert.is_nil(fdm.get_autocast())
  end)

  it("a bad dtype says what is accepted and what was given", function()
    H.raises(function() fdm.set_autocast("int8") end, "set_autocast: dtype must be \"bfloat16\"",
      "\"float16\"", "or nil (off)", "got \"int8\"")
    H.raises(function() fdm.autocast("float32", function() end) end, "autocast:", "got \"float32\"")
    H.raises(function() fdm.autocast(16, function() end) end, "got 16")
    H.raises(function() fdm.autocast("bf16") end, "function expected")
    assert.is_nil(fdm.get_autocast())
  end)

  it("autocast(dtype, fn, ...) passes arguments and results, and restores the state after an error", function()
    local a, b, c = fdm.autocast("bf16", function(p, q) return p + q, fdm.get_autocast(), "z" end, 2, 3)
    assert.are.same({ 5, "bfloat16", "z" }, { a, b, c })
    fdm.set_autocast("float16")
    local err = H.raises(function()
      fdm.autocast("bfloat16", function()
        assert.are.equal("bfloat16", fdm.get_autocast())
        error("inside the region")
      end)
    end, "inside the region")
    assert.truthy(err)
    assert.are.equal("float16", fdm.get_autocast())
    -- nil inside a region turns it off there only
    assert.is_nil(fdm.autocast(nil, fdm.get_autocast))
    assert.are.equal("float16", fdm.get_autocast())
    -- an op's own error inside the region (bad shapes) also restores it
    fdm.set_autocast(nil)
    H.raises(function()
      fdm.autocast("bf16", function() return F.linear(fdm.randn(2, 3), fdm.randn(4, 5)) end)
    end, "linear: input [2, 3] has 3 features")
    assert.is_nil(fdm.get_autocast())
  end)
end)

for _, dev in ipairs(H.devices()) do
  if dev ~= "cuda" then   -- the GPU is checked by tests/cuda/parity.lua (autocast group)
    describe("bf16 autocast on " .. dev, function()
      for _, c in ipairs(CASES) do
        local name, op, opts = c[1], c[2], c[3]

        it(name .. ": output and gradients match PyTorch on rounded operands to " .. REF_TOL, function()
          local y, gx, gw, w = case_on(name, op, opts, dev, "bfloat16")
          assert.are.equal("float32", y.dtype)
          assert.is_true(rel(y, G[name .. ".ref"]) <= REF_TOL, name .. " out " .. rel(y, G[name .. ".ref"]))
          assert.is_true(rel(gx, G[name .. ".ref_gx"]) <= REF_TOL, name .. " gx " .. rel(gx, G[name .. ".ref_gx"]))
          assert.is_true(rel(gw, G[name .. ".ref_gw"]) <= REF_TOL, name .. " gw " .. rel(gw, G[name .. ".ref_gw"]))
          -- master weights: float32, float32 gradients
          assert.are.equal("float32", w.dtype)
          assert.are.equal("float32", w.grad.dtype)
          -- the test can fail: without autocast the result is far from ref
          local y32 = case_on(name, op, opts, dev, nil)
          assert.is_true(rel(y32, G[name .. ".ref"]) > 100 * REF_TOL, name .. " float32 " .. rel(y32, G[name .. ".ref"]))
        end)

        it(name .. ": rounded to bf16, the results are PyTorch autocast's", function()
          local y, gx, gw = case_on(name, op, opts, dev, "bfloat16")
          local loose = META[name .. ".out"]
          if loose then   -- torch's bf16 bmm: not a float32 accumulation (see the header)
            assert.is_true(loose < 0.01 and rel(y, G[name .. ".out"]) < 0.015, name .. " " .. rel(y, G[name .. ".out"]))
          else
            local same, ulps = against_bf16(y, G[name .. ".out"])
            assert.is_true(same >= 0.9 and ulps <= 1, ("%s out: %.3f identical, %.2f ulps"):format(name, same, ulps))
            local same32 = against_bf16(case_on(name, op, opts, dev, nil), G[name .. ".out"])
            assert.is_true(same32 < same, ("%s: float32 also %.3f identical"):format(name, same32))
          end
          for k, got in pairs({ gx = gx, gw = gw }) do
            if G[name .. "." .. k] then
              local same, ulps = against_bf16(got, G[name .. "." .. k])
              assert.is_true(same >= 0.9 and ulps <= 1, ("%s %s: %.3f identical, %.2f ulps"):format(name, k, same, ulps))
            end
          end
        end)
      end

      it("gradients equal the float32 op's on explicitly rounded x, w and gy; the bias gradient sums the float32 gy", function()
        for _, c in ipairs(CASES) do
          local name, op, opts = c[1], c[2], c[3]
          if G[name .. ".b"] then
            local x, w, gy = on(dev, name .. ".x"), on(dev, name .. ".w"), on(dev, name .. ".gy")
            local b1 = on(dev, name .. ".b"):requires_grad_()
            local x1, w1 = x:clone():requires_grad_(), w:clone():requires_grad_()
            fdm.autocast("bf16", run, op, opts, x1, w1, b1):backward(gy)
            local x2, w2 = bf16(x):requires_grad_(), bf16(w):requires_grad_()
            local b2 = on(dev, name .. ".b"):requires_grad_()
            run(op, opts, x2, w2, b2):backward(bf16(gy))
            local b3 = on(dev, name .. ".b"):requires_grad_()
            run(op, opts, x, w, b3):backward(gy)
            -- the same kernels on the same rounded numbers
            assert.are.equal(0, (x1.grad - x2.grad):abs():max():item(), name)
            assert.are.equal(0, (w1.grad - w2.grad):abs():max():item(), name)
            assert.are.equal(0, (b1.grad - b3.grad):abs():max():item(), name)
            assert.is_true((b1.grad - b2.grad):abs():max():item() > 0, name .. ": bias gradient from the rounded gy")
          end
        end
      end)

      it("the backward rounds as its forward did, wherever it runs; bmm and the Linear layer are covered", function()
        fdm.manual_seed(5)
        local a, bm = fdm.randn(3, 4, 9):to(dev), fdm.randn(3, 9, 5):to(dev)
        local gy = fdm.randn(3, 4, 5):to(dev)
        local a1, a2 = a:clone():requires_grad_(), a:clone():requires_grad_()
        local y1 = fdm.autocast("bf16", function() return F.bmm(a1, bm) end)
        y1:backward(gy)                                             -- outside the region
        fdm.autocast("bf16", function() F.bmm(a2, bm):backward(gy) end)   -- inside
        assert.are.equal(0, (a1.grad - a2.grad):abs():max():item())
        assert.are.equal(0, (a1.grad - bf16(gy):matmul(bf16(bm):transpose(2, 3))):abs():max():item())
        -- and a float32 forward is not rounded by a backward run inside a region
        local a3 = a:clone():requires_grad_()
        local y3 = F.bmm(a3, bm)
        fdm.autocast("bf16", function() y3:backward(gy) end)
        assert.are.equal(0, (a3.grad - gy:matmul(bm:transpose(2, 3))):abs():max():item())
        -- nn.Linear under autocast: float32 parameters, float32 gradients
        local lin = fdm.nn.Linear(9, 6):to(dev)
        local out = fdm.autocast("bf16", function() return lin(a) end)
        out:sum():backward()
        assert.are.equal("float32", lin.weight.grad.dtype)
        local want = F.linear(bf16(a), bf16(lin.weight:detach()), lin.bias:detach())
        assert.is_true(rel(out:detach(), want) <= REF_TOL)
      end)

      it("other ops are not rounded: elementwise, softmax, norms", function()
        fdm.manual_seed(6)
        local x = fdm.randn(2, 4, 5, 5):to(dev)
        local function f()
          return F.softmax(x * 1.37 + 0.1, 2), F.group_norm(x, 2), (x:exp() - x):sum()
        end
        local s1, g1, e1 = f()
        local s2, g2, e2 = fdm.autocast("bf16", f)
        assert.are.equal(0, (s1 - s2):abs():max():item())
        assert.are.equal(0, (g1 - g2):abs():max():item())
        assert.are.equal(e1:item(), e2:item())
      end)

      it("float16 autocast rounds to float16 (overflow to inf included)", function()
        fdm.manual_seed(7)
        local x, w = fdm.randn(5, 12):to(dev), fdm.randn(3, 12):to(dev)
        local y = fdm.autocast("float16", F.linear, x, w)
        assert.are.equal(0, (y - F.linear(x:half():float(), w:half():float())):abs():max():item())
        assert.is_true((y - F.linear(bf16(x), bf16(w))):abs():max():item() > 0)
        local big = fdm.full({ 1, 2 }, 70000):to(dev)
        assert.are.equal(math.huge, fdm.autocast("half", F.linear, big, fdm.ones(1, 2):to(dev)):item())
      end)

      it("half-precision weights (inference) work under autocast", function()
        fdm.manual_seed(8)
        local x, w = fdm.randn(2, 3, 6, 6):to(dev), fdm.randn(4, 3, 3, 3):to(dev)
        local y = fdm.no_grad(function()
          return fdm.autocast("bf16", F.conv2d, x, w:to("bfloat16"), nil, { padding = 1 })
        end)
        local want = F.conv2d(bf16(x), bf16(w), nil, { padding = 1 })
        assert.is_true(rel(y, want) <= REF_TOL)
      end)

      if dev ~= "cpu" then
        it("gives the CPU's numbers bit for bit", function()
          for _, c in ipairs(CASES) do
            local y, gx, gw = case_on(c[1], c[2], c[3], dev, "bfloat16")
            local yc, gxc, gwc = case_on(c[1], c[2], c[3], "cpu", "bfloat16")
            assert.are.equal(0, (y - yc):abs():max():item(), c[1])
            assert.are.equal(0, (gx - gxc):abs():max():item(), c[1])
            assert.are.equal(0, (gw - gwc):abs():max():item(), c[1])
          end
        end)
      end
    end)
  end
end

describe("--autocast bf16 in the training scripts", function()
  local BIN = os.getenv("FDM_BIN") or "build/fdm"
  local function train(script, out, autocast, extra)
    local cmd = ("FDM_FAKE_DATA=1 %s %s --subset 128 --batch 32 --epochs 1 --out %s --autocast %s %s 2>&1")
      :format(BIN, script, out, autocast, extra)
    local log = H.sh(cmd)
    return log
  end

  it("flow_time: completes, loss close to the float32 run's, recorded in the model's metadata", function()
    local d = H.tmpdir()
    local logs, loss = {}, {}
    for _, ac in ipairs({ "off", "bf16" }) do
      logs[ac] = train("scripts/flow_time.lua", d .. "/" .. ac, ac, "--hidden 8 --samples 2 --steps 2")
      loss[ac] = tonumber(logs[ac]:match("mean loss ([%d%.e%-]+)"))
      assert.truthy(loss[ac], logs[ac])
    end
    -- 4 Adam steps from the same start: bf16 operands move the loss by ~2e-4 relative
    assert.is_true(math.abs(loss.bf16 - loss.off) < 0.01 * loss.off, loss.bf16 .. " vs " .. loss.off)
    assert.are_not.equal(loss.off, loss.bf16)
    local _, meta = fdm.io.load_safetensors(d .. "/bf16/model.safetensors")
    assert.are.equal("bf16", meta.autocast)
    local _, meta_off = fdm.io.load_safetensors(d .. "/off/model.safetensors")
    assert.are.equal("off", meta_off.autocast)
    os.execute("rm -rf '" .. d .. "'")
  end)

  it("train_ddpm (its own loop) takes it too and records it", function()
    local d = H.tmpdir()
    local log = train("scripts/train_ddpm.lua", d, "bf16", "--hidden 4 --samples=false")
    assert.truthy(log:find("epoch 1: mean loss", 1, true), log)
    local _, meta = fdm.io.load_safetensors(d .. "/ddpm_mnist.safetensors")
    assert.are.equal("bf16", meta.autocast)
    os.execute("rm -rf '" .. d .. "'")
  end)
end)
