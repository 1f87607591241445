-- Part A: fdm.diffusion (sampler mathematics on a toy model with a known
-- optimal noise prediction), fdm.ddpm_model (prompts, the model wrapper) and
-- quick runs of every Part A script on a tiny randomly initialised model.
local fdm = require "fdm"
local D = require "fdm.diffusion"
local M = require "fdm.ddpm_model"

---------------------------------------------------------------- the toy model
-- Data x0 ~ N(mu, s^2) elementwise. With x_t = a x0 + b eps (a = sqrt(abar),
-- b = sqrt(1 - abar)), x_t ~ N(a mu, a^2 s^2 + b^2) and Cov(eps, x_t) = b, so
-- the optimal (MMSE) noise prediction is the Gaussian conditional mean
--   E[eps | x_t] = b (x_t - a mu) / (a^2 s^2 + b^2).
-- cond: a [1,1] tensor holding mu (so conditions batch like real ones).
local function toy_model(s2, schedule)
  local sch = schedule or D.Schedule { kind = "cosine", T = 1000 }
  local m = { schedule = sch, image_shape = { 1, 8, 8 }, device = "cpu", calls = 0 }
  setmetatable(m, { __call = function(self, x, t, cond)
    self.calls = self.calls + 1
    local ab = sch:abar(t)
    local a, b = math.sqrt(ab), math.sqrt(1 - ab)
    local mu = cond:reshape(cond.shape[1], 1, 1, 1)
    return (x - mu * a) * (b / (ab * s2 + 1 - ab))
  end })
  function m:encode(p) return fdm.tensor({ { tonumber(p) or 0 } }) end
  return m
end

-- exact mean/variance after the sampler (fixed_small, no clipping) from
-- N(0, 1) at ts[1]: the update is linear in x_t, so both propagate in closed form
local function predicted_stats(sch, ts, mu, s2)
  local m, v = 0.0, 1.0
  for i = 1, #ts - 1 do
    local ab, abn = sch:abar(ts[i]), sch:abar(ts[i + 1])
    local sa, sb = math.sqrt(ab), math.sqrt(1 - ab)
    local den = ab * s2 + 1 - ab
    local ke, ce = sb / den, -sb * sa * mu / den
    local kx0, cx0 = (1 - sb * ke) / sa, -sb * ce / sa
    local al = ab / abn
    local be = 1 - al
    local c0, c1 = math.sqrt(abn) * be / (1 - ab), math.sqrt(al) * (1 - abn) / (1 - ab)
    m = (c0 * kx0 + c1) * m + c0 * cx0
    v = (c0 * kx0 + c1) ^ 2 * v + be * (1 - abn) / (1 - ab)
  end
  return m, v
end

local function stats(x)
  local mean = x:mean():item()
  local var = (x - mean):square():mean():item()
  return mean, var
end

describe("diffusion schedules and timesteps", function()
  it("builds IF's cosine (squaredcos_cap_v2) schedule", function()
    local sch = D.Schedule { kind = "squaredcos_cap_v2", T = 1000 }
    local f = function(t) return math.cos((t + 0.008) / 1.008 * math.pi / 2) ^ 2 end
    assert.are.equal(1000, sch.T)
    assert.is_true(math.abs(sch:beta(0) - (1 - f(0.001) / f(0))) < 1e-15)
    assert.are.equal(0.999, sch:beta(999))          -- capped
    assert.is_true(math.abs(sch:abar(0) - 0.999958715775178) < 1e-12)
    assert.are.equal(1.0, sch:abar(-1))
    local p = 1
    for t = 0, 499 do p = p * (1 - sch:beta(t)) end
    assert.is_true(math.abs(sch:abar(499) - p) < 1e-12)
    for t = 1, 999 do assert.is_true(sch:abar(t) < sch:abar(t - 1)) end
    assert.are.same({ 1000 }, sch.alphas_cumprod.shape)
  end)

  it("builds the linear schedule", function()
    local sch = D.Schedule { kind = "linear", T = 1000 }
    assert.is_true(math.abs(sch:beta(0) - 1e-4) < 1e-15)
    assert.is_true(math.abs(sch:beta(999) - 0.02) < 1e-15)
    assert.has_error(function() D.Schedule { kind = "nope" } end)
  end)

  it("gives the strided timesteps 990, 960, ..., 0 and other step counts", function()
    local ts = D.strided_timesteps()
    assert.are.equal(34, #ts)
    assert.are.equal(990, ts[1]); assert.are.equal(960, ts[2]); assert.are.equal(0, ts[34])
    assert.are.equal(690, ts[10 + 1])   -- i_start = 10 means t = 690
    assert.are.same(ts, D.strided_timesteps { steps = 34 })
    for _, n in ipairs({ 2, 5, 20, 50, 100, 1000 }) do
      local t = D.strided_timesteps { steps = n }
      assert.are.equal(n, #t)
      assert.are.equal(0, t[n])
      assert.is_true(t[1] <= 999)
      for i = 2, n do assert.are.equal(t[1] - t[2], t[i - 1] - t[i]) end
    end
    assert.are.equal(10, D.index_for_t(ts, 690))
  end)
end)

describe("diffusion one-shot operations", function()
  it("forward(x, t) has the right statistics", function()
    local sch = D.Schedule {}
    fdm.manual_seed(1)
    local x0 = fdm.full({ 4, 1, 100, 100 }, 0.7)
    for _, t in ipairs({ 250, 500, 750 }) do
      local xt, noise = D.forward(sch, x0, t)
      local m, v = stats(xt)
      local ab = sch:abar(t)
      assert.is_true(math.abs(m - math.sqrt(ab) * 0.7) < 0.02, "mean at t=" .. t)
      assert.is_true(math.abs(v / (1 - ab) - 1) < 0.03, "var at t=" .. t)
      -- with the noise given back, exactly the formula
      local again = D.forward(sch, x0, t, noise)
      assert.are.equal(0, (again - xt):abs():max():item())
    end
  end)

  it("one-step denoising inverts forward with the true noise", function()
    local sch = D.Schedule {}
    local x0 = fdm.randn(2, 1, 8, 8)
    local xt, noise = D.forward(sch, x0, 500)
    local back = D.x0_from_eps(sch, xt, 500, noise)
    assert.is_true((back - x0):abs():max():item() < 1e-4)
    local model = toy_model(0.25, sch)
    local est = D.one_step_denoise(model, xt, 500, model:encode("0.3"))
    assert.are.same(x0.shape, est.shape)
  end)

  it("dynamic thresholding as IF: per-sample quantile, s >= 1, clamp and divide", function()
    local a = fdm.linspace(-3, 3, 64):reshape(1, 1, 8, 8)
    local b = fdm.linspace(-0.5, 0.5, 64):reshape(1, 1, 8, 8)
    local y = D.threshold(fdm.cat({ a, b }, 1), 0.995)
    local s = fdm.quantile(a:abs():reshape(64), 0.995):item()
    assert.is_true(math.abs(y[1]:max():item() - 1) < 1e-6)
    assert.is_true(math.abs(y[1]:reshape(64)[40]:item() - a:reshape(64)[40]:item() / s) < 1e-6)
    assert.are.equal(0, (y[2] - b[1]):abs():max():item())   -- s = 1: unchanged
  end)

  it("learned_range variance interpolates the log variance", function()
    local sch = D.Schedule {}
    local beta = 1 - sch:abar(690) / sch:abar(660)
    local small = beta * (1 - sch:abar(660)) / (1 - sch:abar(690))
    local v = fdm.tensor({ -1, 0, 1 })
    local var = D.step_variance(sch, 690, 660, "learned_range", v)
    assert.is_true(math.abs(var[1]:item() / small - 1) < 1e-5)
    assert.is_true(math.abs(var[2]:item() / math.sqrt(small * beta) - 1) < 1e-5)
    assert.is_true(math.abs(var[3]:item() / beta - 1) < 1e-5)
    assert.is_true(math.abs(D.step_variance(sch, 690, 660) - small) < 1e-15)
  end)
end)

describe("diffusion samplers on the Gaussian toy model", function()
  local mu, s2 = 0.3, 0.25

  it("iterative denoising over all 1000 steps reproduces the data's mean and variance", function()
    local model = toy_model(s2)
    fdm.manual_seed(2)
    local ts = {}
    for t = 999, 0, -1 do ts[#ts + 1] = t end
    local s = D.Sampler(model, { n = 8, shape = { 1, 50, 50 }, timesteps = ts, cond = model:encode(mu) })
    local x = s:run()
    assert.is_true(s:done())
    local m, v = stats(x)
    assert.is_true(math.abs(m - mu) < 0.02, "mean " .. m)
    assert.is_true(math.abs(v / s2 - 1) < 0.04, "variance " .. v)
  end)

  it("a step to t' = -1 lands on x0_hat and adds no noise (diffusers' last step)", function()
    local model = toy_model(0.25)
    local opts = { n = 2, shape = { 1, 4, 4 }, timesteps = { 500, 250, -1 }, cond = model:encode(0.3) }
    fdm.manual_seed(7)
    local s = D.Sampler(model, opts)
    s:step()
    local x = s:step()
    assert.is_true(s:done())
    assert.are.equal(0, (x - s.x0_hat):abs():max():item())
    local after = fdm.randn(4)
    -- the same draws without the last step: it took no noise
    fdm.manual_seed(7)
    D.Sampler(model, opts):step()
    assert.are.equal(0, (fdm.randn(4) - after):abs():max():item())
  end)

  it("shows a progress bar over the steps when asked (or when the model asks), closed on an error too", function()
    local model = toy_model(0.25)
    local text = ""
    local out = { write = function(_, ...) for _, v in ipairs({ ... }) do text = text .. v end end, flush = function() end }
    local bar = { desc = "toy", out = out, tty = false, every_percent = 100 }
    D.sample(model, 2, { shape = { 1, 4, 4 }, steps = 5, cond = model:encode(0.3), progress = bar })
    assert.truthy(text:find("toy: 100%%|"), text)
    assert.truthy(text:find("4/4 %["), text)      -- 5 timesteps: 4 steps
    text = ""
    D.sample(model, 2, { shape = { 1, 4, 4 }, steps = 5, cond = model:encode(0.3) })
    assert.are.equal("", text)
    -- a model's own default, on a terminal: closing redraws the bar and ends its line
    model.progress = { desc = "toy", out = out, tty = true, ncols = 60 }
    local s = D.Sampler(model, { n = 1, shape = { 1, 4, 4 }, steps = 5, cond = model:encode(0.3) })
    s:add_hook(function(_, ev) if ev.i == 2 then error("hook failed") end end)
    local ok, err = pcall(function() return s:run() end)
    model.progress = nil
    assert.is_false(ok)
    assert.truthy(tostring(err):find("hook failed", 1, true))
    assert.truthy(text:find("1/4 %["), text)      -- step 2 failed in its hook
    assert.are.equal("\n", text:sub(-1))          -- the bar was closed at the error
  end)

  it("the strided sampler (990 by 30) matches its closed-form statistics", function()
    for _, case in ipairs({ { 0.3, 0.25 }, { -0.5, 0.04 } }) do
      local model = toy_model(case[2])
      fdm.manual_seed(3)
      local ts = D.strided_timesteps()
      local x = D.sample(model, 8, { shape = { 1, 50, 50 }, cond = model:encode(case[1]) })
      local m, v = stats(x)
      local pm, pv = predicted_stats(model.schedule, ts, case[1], case[2])
      assert.is_true(math.abs(m - case[1]) < 0.015, "mean " .. m)
      assert.is_true(math.abs(m - pm) < 0.015, "mean vs prediction " .. m .. " " .. pm)
      assert.is_true(math.abs(v / pv - 1) < 0.04, "variance " .. v .. " vs " .. pv)
      -- and the prediction approaches the data's variance as steps grow
      local _, pv_fine = predicted_stats(model.schedule, D.strided_timesteps { steps = 1000 }, case[1], case[2])
      assert.is_true(math.abs(pv_fine / case[2] - 1) < math.abs(pv / case[2] - 1))
    end
  end)

  it("steps one at a time with hooks that observe and edit x_t", function()
    local model = toy_model(s2)
    local s = D.Sampler(model, { n = 1, steps = 5, cond = model:encode(mu) })
    local seen = {}
    s:add_hook(function(smp, ev)
      seen[#seen + 1] = ev.t
      if ev.i == 2 then return ev.x * 0 end   -- an edit
    end)
    s:step(); s:step()
    assert.are.equal(0, s.x:abs():max():item())
    assert.are.equal(2, s.i)
    s:run()
    assert.are.same({ 747, 498, 249, 0 }, seen)
    assert.is_true(s:done())
  end)

  it("CFG: eps = eps_u + g (eps_c - eps_u); g = 1 equals the conditional sampler exactly", function()
    local model = toy_model(s2)
    local c, u = model:encode(0.5), model:encode(0)
    local x = fdm.randn(2, 1, 8, 8)
    local est = D.cfg(model, c, u, 7)
    local ec, eu = model(x, 500, c), model(x, 500, u)
    assert.is_true((est(x, 500) - (eu + (ec - eu) * 7)):abs():max():item() < 1e-5)
    local function run(opts)
      fdm.manual_seed(5)
      return D.sample(model, 4, opts)
    end
    local a = run({ cond = c, uncond = u, cfg = 1 })
    local b = run({ cond = c })
    assert.are.equal(0, (a - b):abs():max():item())
  end)

  it("inpainting keeps the known pixels (m = 0) equal to the original", function()
    local model = toy_model(s2)
    fdm.manual_seed(6)
    local x_orig = fdm.rand(2, 1, 8, 8) * 2 - 1
    local mask = fdm.zeros(1, 1, 8, 8)
    mask:narrow(3, 3, 4):narrow(4, 3, 4):fill_(1)
    local x = D.inpaint(model, x_orig, mask, { cond = model:encode(mu), steps = 10 })
    local keep = 1 - mask
    assert.are.equal(0, ((x - x_orig) * keep):abs():max():item())
    assert.is_true(((x - x_orig) * mask):abs():max():item() > 0)
  end)

  it("SDEdit starts from the noised image at strided_timesteps[i_start]", function()
    local model = toy_model(s2)
    local x = fdm.zeros(1, 1, 8, 8)
    local y = D.sdedit(model, x, 33 - 1, { cond = model:encode(mu) })
    assert.are.same(x.shape, y.shape)
  end)
end)

describe("visual anagrams and hybrids", function()
  local model = M.new { hidden = 8 }
  model.net:eval()

  it("views invert", function()
    local x = fdm.randn(2, 1, 28, 28)
    for _, name in ipairs({ "identity", "flip", "rot90", "rot180", "rot270", "negate", "jigsaw" }) do
      local v = D.view_by_name(name)
      assert.are.equal(0, (v.inverse(v.apply(x)) - x):abs():max():item(), name)
    end
    assert.are.equal(0, (D.views.flip.apply(x) - x:flip(3)):abs():max():item())
    assert.are.equal(0, (D.views.rot90.apply(D.views.rot90.apply(x)) - x:flip(3, 4)):abs():max():item())
    assert.has_error(function() D.view_by_name("spin") end)
  end)

  it("a flip anagram of one prompt is flip-equivariant, and symmetric from symmetric noise", function()
    local c = model:encode("8")
    local entries = { { cond = c, view = D.views.identity }, { cond = c, view = D.views.flip } }
    local est = D.anagram(model, entries, model:encode(""), 7)
    local x = fdm.randn(2, 1, 28, 28)
    local e1 = est(x:flip(3), 500)
    local e2 = est(x, 500):flip(3)
    assert.is_true((e1 - e2):abs():max():item() < 1e-4)
    fdm.manual_seed(7)
    local n = fdm.randn(2, 1, 28, 28)
    local x0 = (n + n:flip(3)) * (1 / math.sqrt(2))
    local y = D.sample(model, 2, { x = x0, estimator = est, steps = 6, add_variance = false })
    assert.is_true((y - y:flip(3)):abs():max():item() < 1e-3)
  end)

  it("hybrids combine low and high frequencies of two estimates", function()
    local toy = toy_model(0.25)
    local x = fdm.randn(1, 1, 28, 28)
    local est = D.hybrid(toy, toy:encode(0.5), toy:encode(-0.5), nil, nil)
    local e1, e2 = toy(x, 400, toy:encode(0.5)), toy(x, 400, toy:encode(-0.5))
    local want = D.lowpass(e1, 33, 2) + e2 - D.lowpass(e2, 33, 2)
    assert.is_true((est(x, 400) - want):abs():max():item() < 1e-5)
  end)

  -- the DCT low-pass against the plain formulas: the 2-D DCT-II of an image,
  -- its coefficients above `keep` set to zero, the inverse DCT (DCT-III)
  local function naive_dct_lowpass(img, keep)   -- img: Lua rows [h][w]
    local h, w = #img, #img[1]
    local function c(k, n) return k == 0 and math.sqrt(1 / n) or math.sqrt(2 / n) end
    local coef = {}
    for u = 0, h - 1 do
      coef[u] = {}
      for v = 0, w - 1 do
        local s = 0
        if u < keep and v < keep then
          for i = 0, h - 1 do
            for j = 0, w - 1 do
              s = s + img[i + 1][j + 1] * math.cos(math.pi * (i + 0.5) * u / h) * math.cos(math.pi * (j + 0.5) * v / w)
            end
          end
        end
        coef[u][v] = c(u, h) * c(v, w) * s
      end
    end
    local out = {}
    for i = 0, h - 1 do
      out[i + 1] = {}
      for j = 0, w - 1 do
        local s = 0
        for u = 0, keep - 1 do
          for v = 0, keep - 1 do
            s = s + c(u, h) * c(v, w) * coef[u][v] * math.cos(math.pi * (i + 0.5) * u / h) * math.cos(math.pi * (j + 0.5) * v / w)
          end
        end
        out[i + 1][j + 1] = s
      end
    end
    return out
  end

  it("the DCT low-pass is the DCT-II truncation, an exact projection, on any image size", function()
    fdm.manual_seed(3)
    local x = fdm.randn(2, 3, 12, 9)
    local f = { kind = "dct", keep = 4 }
    local y = D.lowpass(x, f)
    assert.are.same({ 2, 3, 12, 9 }, y.shape)
    for _, nc in ipairs({ { 1, 1 }, { 2, 3 } }) do
      local img = x:narrow(1, nc[1], 1):narrow(2, nc[2], 1):reshape(12, 9):tolist()
      local want = fdm.tensor(naive_dct_lowpass(img, 4))
      local got = y:narrow(1, nc[1], 1):narrow(2, nc[2], 1):reshape(12, 9)
      assert.is_true((got - want):abs():max():item() < 1e-5)
    end
    assert.is_true((D.lowpass(y, f) - y):abs():max():item() < 1e-5)            -- L L = L
    assert.is_true(D.lowpass(x - y, f):abs():max():item() < 1e-5)             -- L H = 0: no leak between bands
    local c = fdm.full({ 1, 1, 28, 28 }, 0.7)                                  -- a constant is all low band
    assert.is_true((D.lowpass(c, { kind = "dct", keep = 1 }) - c):abs():max():item() < 1e-5)
    -- the Gaussian form is unchanged
    assert.is_true((D.lowpass(x, { kind = "gaussian", kernel = 9, sigma = 1.5 }) - D.lowpass(x, 9, 1.5)):abs():max():item() == 0)
  end)

  it("hybrid filters: the calibrated default per image size and clear errors", function()
    assert.are.same({ kind = "dct", keep = 6 }, D.hybrid_filter({ 1, 28, 28 }))
    assert.are.same({ kind = "gaussian", kernel = 33, sigma = 2 }, D.hybrid_filter({ 3, 64, 64 }))
    assert.are.same({ kind = "dct", keep = 12 }, D.hybrid_filter({ 1, 56, 56 }))
    assert.are.equal("own", D.hybrid_isolate({ 1, 28, 28 }))
    assert.is_nil(D.hybrid_isolate({ 3, 64, 64 }))
    local x = fdm.randn(1, 1, 28, 28)
    local cases = {
      { { kind = "dct" }, "keep = a positive integer" },
      { { kind = "dct", keep = 0 }, "keep = a positive integer" },
      { { kind = "dct", keep = 29 }, "keeping 29 frequencies needs images of at least 29x29, got 28x28" },
      { { kind = "box" }, 'low-pass kind must be "gaussian" or "dct", got box' },
    }
    for _, cse in ipairs(cases) do
      local ok, err = pcall(D.lowpass, x, cse[1])
      assert.is_false(ok)
      assert.matches(cse[2], err, 1, true)
    end
    local ok, err = pcall(D.lowpass, fdm.randn(28, 28), { kind = "dct", keep = 6 })
    assert.is_false(ok)
    assert.matches("expected an image batch [N, C, H, W], got 2 dimensions", err, 1, true)
  end)

  it("hybrids with the DCT filter split the two estimates exactly", function()
    local toy = toy_model(0.25)
    local x = fdm.randn(1, 1, 28, 28)
    local f = D.hybrid_filter(toy.image_shape)
    local est = D.hybrid(toy, toy:encode(0.5), toy:encode(-0.5), nil, nil, { filter = f })
    local e1, e2 = toy(x, 400, toy:encode(0.5)), toy(x, 400, toy:encode(-0.5))
    local e = est(x, 400)
    assert.is_true((D.lowpass(e, f) - D.lowpass(e1, f)):abs():max():item() < 1e-5)           -- afar: the far estimate's band only
    assert.is_true(((e - D.lowpass(e, f)) - (e2 - D.lowpass(e2, f))):abs():max():item() < 1e-5)
  end)

  -- the toy model, recording the batch it was called with
  local function recording_toy()
    local toy = toy_model(0.25)
    local rec = { inputs = {} }
    setmetatable(rec, { __call = function(self, x, t, cond)
      self.inputs[#self.inputs + 1] = x
      return toy(x, t, cond)
    end })
    rec.schedule, rec.image_shape, rec.device = toy.schedule, toy.image_shape, toy.device
    function rec:encode(p) return toy:encode(p) end
    return rec
  end
  local function close(a, b) return (a - b):abs():max():item() < 1e-5 end

  it("hybrid options: a guidance scale per band, the far prompt alone above a timestep", function()
    local toy = recording_toy()
    local far, near, un = toy:encode(0.5), toy:encode(-0.5), toy:encode(0)
    local x = fdm.randn(1, 1, 28, 28)
    local o = { kernel = 9, sigma = 1.5 }
    local e1, e2, eu = toy(x, 400, far), toy(x, 400, near), toy(x, 400, un)
    local lp = function(v) return D.lowpass(v, 9, 1.5) end
    local est = D.hybrid(toy, far, near, un, 7, { kernel = 9, sigma = 1.5, cfg_high = 2 })
    local want = lp(D.guide(e1, eu, 7)) + D.guide(e2, eu, 2) - lp(D.guide(e2, eu, 2))
    assert.is_true(close(est(x, 400), want))
    -- the same as the default when both scales are the default
    assert.is_true(close(D.hybrid(toy, far, near, un, 7, o)(x, 400),
      lp(D.guide(e1, eu, 7)) + D.guide(e2, eu, 7) - lp(D.guide(e2, eu, 7))))
    local est2 = D.hybrid(toy, far, near, un, 7, { kernel = 9, sigma = 1.5, cfg_low = 3, low_above = 500 })
    local e1b, eub = toy(x, 600, far), toy(x, 600, un)
    toy.inputs = {}
    assert.is_true(close(est2(x, 600), D.guide(e1b, eub, 3)))   -- above: the far prompt's whole estimate
    assert.are.equal(1, #toy.inputs)
    assert.are.equal(2, toy.inputs[1].shape[1])                   -- one batch: far and unconditional
    assert.is_true(close(est2(x, 400), lp(D.guide(e1, eu, 3)) + D.guide(e2, eu, 7) - lp(D.guide(e2, eu, 7))))
  end)

  it("hybrid isolate: each prompt's pass sees its band of x_t, the other band fresh noise of x_t's level", function()
    local toy = recording_toy()
    local far, near, un = toy:encode(0.5), toy:encode(-0.5), toy:encode(0)
    local x = fdm.randn(1, 1, 28, 28)
    local lp = function(v) return D.lowpass(v, 9, 1.5) end
    local level = math.sqrt(1 - toy.schedule:abar(300))
    for _, mode in ipairs({ "far", "both" }) do
      local est = D.hybrid(toy, far, near, un, 7, { kernel = 9, sigma = 1.5, isolate = mode })
      fdm.manual_seed(11)
      local n1 = fdm.randn_like(x) * level
      local n2 = mode == "both" and fdm.randn_like(x) * level or nil
      local x_low = lp(x) + n1 - lp(n1)
      local x_high = n2 and (x - lp(x) + lp(n2)) or x
      toy.inputs = {}
      fdm.manual_seed(11)
      local e = est(x, 300)
      local b = toy.inputs[1]
      assert.are.equal(4, b.shape[1], mode)          -- far, near, and an unconditional pass on each input
      assert.is_true(close(b:narrow(1, 1, 1), x_low), mode)
      assert.is_true(close(b:narrow(1, 2, 1), x_high), mode)
      assert.is_true(close(b:narrow(1, 3, 1), x_low), mode)
      assert.is_true(close(b:narrow(1, 4, 1), x_high), mode)
      local g1 = D.guide(toy(x_low, 300, far), toy(x_low, 300, un), 7)
      local g2 = D.guide(toy(x_high, 300, near), toy(x_high, 300, un), 7)
      assert.is_true(close(e, lp(g1) + g2 - lp(g2)), mode)
    end
    local ok, err = pcall(D.hybrid, toy, far, near, un, 7, { isolate = "near" })
    assert.is_false(ok)
    assert.matches('isolate must be "far", "both" or "own", got near', err, 1, true)
  end)

  it("hybrid isolate own: each pass sees the other band from its own previous x0 estimate", function()
    local toy = recording_toy()
    local far, near, un = toy:encode(0.5), toy:encode(-0.5), toy:encode(0)
    local f = { kind = "dct", keep = 3 }
    local lp = function(v) return D.lowpass(v, f) end
    local sch = toy.schedule
    local est = D.hybrid(toy, far, near, un, 7, { filter = f, isolate = "own" })
    local x1, x2 = fdm.randn(1, 1, 8, 8), fdm.randn(1, 1, 8, 8)
    -- first step: both passes see x_t itself (one batch of three: far, near, unconditional)
    toy.inputs = {}
    local e = est(x1, 600)
    assert.are.equal(3, toy.inputs[1].shape[1])
    local g1 = D.guide(toy(x1, 600, far), toy(x1, 600, un), 7)
    local g2 = D.guide(toy(x1, 600, near), toy(x1, 600, un), 7)
    assert.is_true(close(e, lp(g1) + g2 - lp(g2)))
    local own_far = fdm.clamp(D.x0_from_eps(sch, x1, 600, g1), -1, 1)
    local own_near = fdm.clamp(D.x0_from_eps(sch, x1, 600, g2), -1, 1)
    -- next step: the far pass sees x's low band and its own x0's high band noised to t; the near pass the reverse
    local a, b = math.sqrt(sch:abar(300)), math.sqrt(1 - sch:abar(300))
    fdm.manual_seed(21)
    local o1 = own_far * a + fdm.randn_like(x2) * b
    local o2 = own_near * a + fdm.randn_like(x2) * b
    local x_low, x_high = lp(x2) + o1 - lp(o1), x2 - lp(x2) + lp(o2)
    toy.inputs = {}
    fdm.manual_seed(21)
    e = est(x2, 300)
    local bt = toy.inputs[1]
    assert.are.equal(4, bt.shape[1])
    assert.is_true(close(bt:narrow(1, 1, 1), x_low))
    assert.is_true(close(bt:narrow(1, 2, 1), x_high))
    local h1 = D.guide(toy(x_low, 300, far), toy(x_low, 300, un), 7)
    local h2 = D.guide(toy(x_high, 300, near), toy(x_high, 300, un), 7)
    assert.is_true(close(e, lp(h1) + h2 - lp(h2)))
    -- a new run (t not decreasing) starts from x_t again
    toy.inputs = {}
    est(x1, 600)
    assert.are.equal(3, toy.inputs[1].shape[1])
  end)
end)

describe("ddpm_model prompts and wrapper", function()
  it("maps prompts to classes", function()
    for p, c in pairs({ ["7"] = 7, ["a 7"] = 7, ["seven"] = 7, ["the digit seven"] = 7, ["The digit Seven."] = 7,
      ["digit 3"] = 3, ["the number 0"] = 0, ["a handwritten 4"] = 4, ["nine"] = 9, [""] = -1,
      ["a digit"] = -1, ["a handwritten digit"] = -1 }) do
      assert.are.equal(c, (M.parse_prompt(p)), p)
    end
  end)

  it("rejects unknown prompts with an error listing the valid ones", function()
    local model = M.new { hidden = 8 }
    local ok, err = pcall(model.encode, model, "a cat")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("unknown prompt 'a cat'", 1, true))
    assert.truthy(tostring(err):find("zero", 1, true))
    assert.truthy(tostring(err):find("the digit seven", 1, true))
    assert.is_nil((M.parse_prompt("10")))
  end)

  it("encodes one-hot conditions and predicts eps of the image's shape", function()
    local model = M.new { hidden = 8 }
    model.net:eval()
    local c = model:encode("the digit seven")
    assert.are.same({ 1, 10 }, c.shape)
    assert.are.equal(1, c[1][8]:item())
    assert.are.equal(0, model:encode(""):abs():sum():item())
    local eps = fdm.no_grad(function() return model(fdm.randn(3, 1, 28, 28), 500, c) end)
    assert.are.same({ 3, 1, 28, 28 }, eps.shape)
    assert.are.equal("fixed_small", model.variance)
  end)

  it("saves and loads weights; a missing file says how to train", function()
    local model = M.new { hidden = 8 }
    local p = os.tmpname() .. ".safetensors"
    M.save(model, p)
    local back = M.load(p)
    assert.are.equal(8, back.hidden)
    os.remove(p)
    local ok, err = pcall(M.load, "/nonexistent/ddpm.safetensors")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("train_ddpm.lua", 1, true))
  end)

  it("has a training loss", function()
    local model = M.new { hidden = 8 }
    local loss = M.loss(model, fdm.rand(4, 1, 28, 28), fdm.tensor({ 1, 2, 3, 4 }, { dtype = "int64" }))
    assert.is_true(loss:item() > 0)
    loss:backward()
  end)
end)

---------------------------------------------------------------- scripts
local BIN = os.getenv("FDM_BIN") or "build/fdm"
local H = require "helpers"
local sh, exists = H.sh, H.exists

describe("Part A scripts (tiny random model)", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local weights = dir .. "/ddpm_mnist.safetensors"
  local env = "OMP_NUM_THREADS=1 "

  it("train_ddpm.lua runs a smoke epoch and writes checkpoint, curve and weights", function()
    local out, rc = sh(env .. BIN .. " scripts/train_ddpm.lua --subset 256 --hidden 8 --epochs 1 --batch 128 --out " .. dir)
    assert.are.equal(0, rc, out)
    for _, f in ipairs({ "checkpoint.safetensors", "loss.png", "samples_epoch1.png", "ddpm_mnist.safetensors" }) do
      assert.is_true(exists(dir .. "/" .. f), f .. "\n" .. out)
    end
    local out2, rc2 = sh(env .. BIN .. " scripts/train_ddpm.lua --subset 256 --hidden 8 --epochs 2 --batch 128 --samples=false --resume --out " .. dir)
    assert.are.equal(0, rc2, out2)
    assert.truthy(out2:find("resumed from", 1, true))
  end)

  -- 1.1-1.3 take no --steps (they do not sample): scripts list only what they read
  local scripts = {
    { "scripts/partA/0_sampling.lua", "0_sampling.png" },
    { "scripts/partA/1_1_forward.lua", "1_1_forward.png", "", true },
    { "scripts/partA/1_2_blur.lua", "1_2_blur.png", "", true },
    { "scripts/partA/1_3_one_step.lua", "1_3_one_step.png", "", true },
    { "scripts/partA/1_4_iterative.lua", "1_4_iterative.gif" },
    { "scripts/partA/1_5_sampling.lua", "1_5_sampling.png" },
    { "scripts/partA/1_6_cfg.lua", "1_6_cfg.png" },
    { "scripts/partA/1_7_sdedit.lua", "1_7_sdedit.png" },
    { "scripts/partA/1_7_1_sketches.lua", "1_7_1_sketches.png" },
    { "scripts/partA/1_7_2_inpainting.lua", "1_7_2_inpainting.png" },
    { "scripts/partA/1_7_3_text_i2i.lua", "1_7_3_text_i2i.png" },
    { "scripts/partA/1_8_anagrams.lua", "1_8_anagrams.png", " --extras" },
    { "scripts/partA/1_9_hybrids.lua", "1_9_hybrids.png" },
  }
  for _, s in ipairs(scripts) do
    it("runs " .. s[1], function()
      local out, rc = sh(env .. BIN .. " " .. s[1] .. " --model " .. weights .. " --out " .. dir .. "/partA" ..
        (s[4] and "" or " --steps 5") .. " --seed 1" .. (s[3] or ""))
      assert.are.equal(0, rc, out)
      assert.is_true(exists(dir .. "/partA/" .. s[2]), out)
      assert.truthy(out:find("wrote " .. dir .. "/partA/", 1, true))
    end)
  end

  it("runs scripts/anagram.lua and SDEdit on a user image (light background)", function()
    local out, rc = sh(env .. BIN .. " scripts/anagram.lua --model " .. weights .. " --out " .. dir .. "/anagram.png --steps 5")
    assert.are.equal(0, rc, out)
    assert.is_true(exists(dir .. "/anagram.png"))
    -- a light-background colour PNG of another size, via --image
    local img = dir .. "/user.png"
    local w = fdm.ones(3, 40, 50)
    w:narrow(2, 10, 20):narrow(3, 20, 6):fill_(0.1)
    fdm.io.write_png(img, w)
    local out2, rc2 = sh(env .. BIN .. " scripts/partA/1_7_sdedit.lua --model " .. weights .. " --out " .. dir ..
      "/partA --steps 5 --image " .. img .. " --i-starts 3")
    assert.are.equal(0, rc2, out2)
  end)

  it("inpainting: masks must pair with images (count, and --mask alone), a usage error before any work", function()
    local img = dir .. "/user.png"
    fdm.io.write_png(img, fdm.ones(3, 28, 28))
    local out, rc = sh(BIN .. " scripts/partA/1_7_2_inpainting.lua --image " .. img .. " --mask " .. img .. "," .. img)
    assert.are.equal(2, rc, out)
    assert.truthy(out:find("1 images but 2 masks (one --mask per --image", 1, true), out)
    out, rc = sh(BIN .. " scripts/partA/1_7_2_inpainting.lua --mask " .. img)
    assert.are.equal(2, rc, out)
    assert.truthy(out:find("--mask needs --image", 1, true), out)
  end)

  it("--strokes is parsed strictly; Gaussian kernels and widths are checked before any work", function()
    local C = dofile("scripts/partA/common.lua")
    assert.are.same({ { { 7, 6 }, { 20, 6.5 } }, { { 1, 2 }, { 3, 4 }, { 5, 6 } } }, C.parse_strokes("7,6 20,6.5; 1,2 3,4  5,6"))
    for bad, why in pairs { ["abc"] = "'abc' is not a point", ["7,6_20,6"] = "'7,6_20,6' is not a point",
        ["3,4"] = "needs two points or more", [" ; "] = "no polyline", ["1,2 3,x"] = "'3,x' is not a point" } do
      local strokes, err = C.parse_strokes(bad)
      assert.is_nil(strokes, bad)
      assert.truthy(err:find(why, 1, true), err)
    end
    for _, case in ipairs {
      { "1_2_blur.lua --kernel 4", "--kernel 4: a Gaussian kernel size must be odd" },
      { "1_2_blur.lua --kernel 61", "--kernel 61 is too large for 28x28 images (reflect padding: at most 55)" },
      { "1_2_blur.lua --sigma 0", "--sigma expects a number >= 0.001" },
      { "1_9_hybrids.lua --kernel 12", "--kernel 12: a Gaussian kernel size must be odd" },
      { "1_7_1_sketches.lua --strokes abc", "--strokes: 'abc' is not a point x,y" },
      { "1_7_1_sketches.lua --width 0", "--width expects a number >= 0.1" },
    } do
      local out, rc = sh(BIN .. " scripts/partA/" .. case[1] .. " --model " .. weights .. " --out " .. dir .. "/bad")
      assert.are.equal(2, rc, out)
      assert.truthy(out:find(case[2], 1, true), out)
    end
  end)

  it("prepares user images: gray, resized, cropped, inverted on a light background", function()
    local C = dofile("scripts/partA/common.lua")
    local im = fdm.ones(3, 40, 50)
    im:narrow(2, 10, 20):narrow(3, 20, 10):fill_(0)
    local x, inverted = C.prepare_image(im)
    assert.are.same({ 1, 1, 28, 28 }, x.shape)
    assert.is_true(inverted)
    assert.is_true(x[1][1][1][1]:item() < 0.05)      -- background dark
    assert.is_true(x[1][1][14][14]:item() > 0.9)     -- the stroke light
    local s = C.render_strokes({ { { 4, 14 }, { 24, 14 } } })
    assert.are.same({ 1, 1, 28, 28 }, s.shape)
    assert.is_true(s[1][1][14][14]:item() > 0.9 and s[1][1][3][14]:item() == 0)
  end)

  it("image-to-image prompts: auto conditions each image on its digit (label, sketch, classifier)", function()
    local C = dofile("scripts/partA/common.lua")
    local args = { prompt = C.AUTO_PROMPT }
    local x7, d7 = C.test_image(1)
    assert.are.equal(7, d7)
    local p, cap = C.image_prompt(args, x7, "test image", d7)
    assert.are.equal("the digit seven", p)
    assert.are.equal("test image (prompt 7)", cap)
    -- the prompt encodes as that class, not as the unconditional prompt
    local M = require "fdm.ddpm_model"
    assert.are.equal(7, M.parse_prompt(p))
    -- a user's image: read by the shipped classifier (MNIST test 2 is a 1, test 3 a 0)
    for k = 2, 3 do
      local x, d = C.test_image(k)
      local pk, ck = C.image_prompt(args, x, "mine.png")
      assert.are.equal(d, M.parse_prompt(pk))
      assert.are.equal(("mine.png (read as %d)"):format(d), ck)
    end
    -- an explicit prompt is used for every image, unchanged
    assert.are.same({ "", "mine.png" }, { C.image_prompt({ prompt = "" }, x7, "mine.png", 7) })
    for _, sk in ipairs(C.SKETCHES) do assert.is_number(sk.digit, sk.name) end
    -- the conditioning reaches the sampler: auto and "" give different edits with the same seed
    local function run(extra)
      local o = dir .. "/prompt" .. #extra
      local out, rc = sh(env .. BIN .. " scripts/partA/1_7_sdedit.lua --model " .. weights .. " --out " .. o ..
        " --steps 5 --seed 1 --i-starts 1" .. extra)
      assert.are.equal(0, rc, out)
      return H.slurp(o .. "/1_7_sdedit.png")
    end
    assert.are_not.equal(run(""), run(" --prompt ''"))
  end)

  it("a missing model and an unknown prompt give clear errors", function()
    local out, rc = sh(BIN .. " scripts/partA/1_5_sampling.lua --model " .. dir .. "/none.safetensors")
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("train_ddpm.lua", 1, true), out)
    local out2, rc2 = sh(BIN .. " scripts/partA/1_6_cfg.lua --model " .. weights .. " --prompt 'a cat' --out " .. dir)
    assert.are.equal(2, rc2)
    assert.truthy(out2:find("valid prompts", 1, true), out2)
  end)

  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
end)
