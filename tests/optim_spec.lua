-- tests for fdm.optim: single steps by hand, several steps against PyTorch
-- (tests/golden/nn_optim.safetensors from tools/gen_nn_golden.py),
-- checkpoints, schedulers, clip_grad_norm_, EMA.
local fdm = require "fdm"
local H = require "helpers"
local optim = fdm.optim
local nn = fdm.nn

-- gives p the gradient g (through autograd: d/dp sum(p * g) = g)
local function set_grad(p, g)
  p:zero_grad();
  (p * g):sum():backward()
end

local function param(vals)
  return fdm.tensor(vals, { requires_grad = true })
end

local EXACT = { atol = 1e-7, rtol = 1e-6 }

describe("optim single steps (hand-computed)", function()
  it("SGD", function()
    local p = param({ 1, 2 })
    local opt = optim.SGD({ p }, { lr = 0.1 })
    set_grad(p, fdm.tensor({ 0.5, -1 }))
    opt:step()
    H.assert_close(p, fdm.tensor({ 0.95, 2.1 }), EXACT)
    assert.is_true(p.requires_grad and p.is_leaf)
  end)

  it("SGD with momentum, dampening, weight decay and nesterov", function()
    local p = param({ 1, -2 })
    local opt = optim.SGD({ p }, { lr = 0.1, momentum = 0.9, dampening = 0.5, weight_decay = 0.1 })
    set_grad(p, fdm.tensor({ 1, 1 }))
    opt:step()                  -- d = g + 0.1 p = {1.1, 0.8}; buf = d
    H.assert_close(p, fdm.tensor({ 1 - 0.11, -2 - 0.08 }), EXACT)
    set_grad(p, fdm.tensor({ 1, 1 }))
    opt:step()                  -- d = {1.089, 0.792}; buf = 0.9 buf + 0.5 d
    local b1, b2 = 0.9 * 1.1 + 0.5 * (1 + 0.1 * 0.89), 0.9 * 0.8 + 0.5 * (1 + 0.1 * -2.08)
    H.assert_close(p, fdm.tensor({ 0.89 - 0.1 * b1, -2.08 - 0.1 * b2 }), EXACT)

    local q = param({ 1 })
    local nes = optim.SGD({ q }, { lr = 0.1, momentum = 0.5, nesterov = true })
    set_grad(q, fdm.tensor({ 2 }))
    nes:step()                  -- buf = 2; d = 2 + 0.5 * 2 = 3
    H.assert_close(q, fdm.tensor({ 0.7 }), EXACT)
  end)

  it("Adam: the first step moves each weight by about lr", function()
    local p = param({ 1, -1, 0.5 })
    local opt = optim.Adam({ p }, { lr = 0.01 })
    local g = { 0.3, -2, 1e-3 }
    set_grad(p, fdm.tensor(g))
    opt:step()
    -- m = 0.1 g, v = 0.001 g^2; step_size = lr / 0.1; denom = |g| + eps
    local exp = {}
    for i, x in ipairs({ 1, -1, 0.5 }) do exp[i] = x - 0.01 * g[i] / (math.abs(g[i]) + 1e-8) end
    H.assert_close(p, fdm.tensor(exp), EXACT)
    local st = opt.state[p]
    assert.are.equal(1, st.step)
    H.assert_close(st.exp_avg, fdm.tensor({ 0.03, -0.2, 1e-4 }), EXACT)
  end)

  it("Adam with L2 weight decay vs AdamW with decoupled decay", function()
    local p1, p2 = param({ 2 }), param({ 2 })
    local a = optim.Adam({ p1 }, { lr = 0.1, weight_decay = 0.5 })
    local w = optim.AdamW({ p2 }, { lr = 0.1, weight_decay = 0.5 })
    set_grad(p1, fdm.tensor({ -0.5 })); set_grad(p2, fdm.tensor({ -0.5 }))
    a:step(); w:step()
    -- Adam: g' = -0.5 + 0.5 * 2 = 0.5 -> p - lr * sign(g')
    H.assert_close(p1, fdm.tensor({ 2 - 0.1 * 0.5 / (0.5 + 1e-8) }), EXACT)
    -- AdamW: p * (1 - lr * wd) - lr * sign(g)
    H.assert_close(p2, fdm.tensor({ 2 * (1 - 0.05) + 0.1 * 0.5 / (0.5 + 1e-8) }), EXACT)
  end)

  it("skips parameters without gradients and zero_grad clears them", function()
    local p, q = param({ 1 }), param({ 1 })
    local opt = optim.SGD({ p, q }, { lr = 1 })
    set_grad(p, fdm.tensor({ 1 }))
    opt:step()
    assert.are.equal(0, p:item())
    assert.are.equal(1, q:item())
    opt:zero_grad()
    assert.is_nil(p.grad)
  end)

  it("parameter groups have their own hyperparameters", function()
    local p, q = param({ 1 }), param({ 1 })
    local opt = optim.SGD({ { params = { p } }, { params = { q }, lr = 0.5 } }, { lr = 0.1 })
    set_grad(p, fdm.tensor({ 1 })); set_grad(q, fdm.tensor({ 1 }))
    opt:step()
    H.assert_close(p, fdm.tensor({ 0.9 }), EXACT)
    H.assert_close(q, fdm.tensor({ 0.5 }), EXACT)
    assert.are.equal(0.1, opt.param_groups[1].lr)
    assert.are.equal(0.5, opt.param_groups[2].lr)
  end)

  it("accepts a module", function()
    local l = nn.Linear(3, 2)
    local opt = optim.AdamW(l, { lr = 1e-3 })
    assert.are.equal(2, #opt.param_groups[1].params)
    l(fdm.randn(4, 3)):sum():backward()
    local before = l.weight:clone()
    opt:step()
    assert.is_true((l.weight - before):abs():max():item() > 0)
  end)
end)

-- same table as CONFIGS in tools/gen_nn_golden.py
local CONFIGS = {
  sgd = { "SGD", { lr = 0.1 } },
  sgd_mom = { "SGD", { lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 0.01 } },
  sgd_nesterov = { "SGD", { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.001 } },
  adam = { "Adam", { lr = 0.01 } },
  adam_wd_ams = { "Adam", { lr = 0.01, betas = { 0.8, 0.99 }, eps = 1e-6, weight_decay = 0.1, amsgrad = true } },
  adamw = { "AdamW", { lr = 0.01, weight_decay = 0.1 } },
  adamw_ams = { "AdamW", { lr = 0.02, betas = { 0.5, 0.9 }, weight_decay = 0.05, amsgrad = true } },
}
local STEPS = 5
local TOL = { atol = 2e-6, rtol = 2e-5 }

describe("optim against PyTorch 1.13 (golden)", function()
  local G
  setup(function() G = H.load_golden(H.here("golden/nn_optim.safetensors")) end)

  local function fresh()
    return { G.p0:clone():requires_grad_(), G.p1:clone():requires_grad_() }
  end
  local function grads(params, s)
    for i, p in ipairs(params) do set_grad(p, G[string.format("g%d.%d", s, i - 1)]) end
  end

  local names = {}
  for k in pairs(CONFIGS) do names[#names + 1] = k end
  table.sort(names)
  for _, cfg in ipairs(names) do
    local cls, opts = CONFIGS[cfg][1], CONFIGS[cfg][2]
    it(cfg .. ": " .. STEPS .. " steps", function()
      local params = fresh()
      local opt = optim[cls](params, opts)
      for s = 1, STEPS do
        grads(params, s)
        opt:step()
        for i, p in ipairs(params) do
          H.assert_close(p, G[string.format("%s.%d.%d", cfg, s, i - 1)], TOL,
            string.format("%s step %d param %d", cfg, s, i - 1))
        end
      end
      for i, p in ipairs(params) do
        local st = opt.state[p]
        for _, k in ipairs({ "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer" }) do
          local exp = G[string.format("%s.state.%d.%s", cfg, i - 1, k)]
          if exp then H.assert_close(st[k], exp, TOL, cfg .. " " .. k) end
        end
      end
    end)

    it(cfg .. ": resumes from state_tensors() and from state_dict()", function()
      for _, how in ipairs({ "tensors", "dict" }) do
        local params = fresh()
        local opt = optim[cls](params, opts)
        for s = 1, 2 do grads(params, s); opt:step() end
        local saved_p = { params[1]:detach():clone(), params[2]:detach():clone() }
        local params2 = { saved_p[1]:requires_grad_(), saved_p[2]:requires_grad_() }
        local opt2 = optim[cls](params2, { lr = 123 })
        if how == "tensors" then
          local t, meta = opt:state_tensors()
          for k, v in pairs(t) do assert.are.equal("userdata", type(v), k) end
          for k, v in pairs(meta) do assert.are.equal("string", type(v), k) end
          opt2:load_state_tensors(t, meta)
        else
          opt2:load_state_dict(opt:state_dict())
        end
        assert.are.equal(opts.lr, opt2.param_groups[1].lr)
        for s = 3, STEPS do grads(params2, s); opt2:step() end
        for i, p in ipairs(params2) do
          H.assert_close(p, G[string.format("%s.%d.%d", cfg, STEPS, i - 1)], TOL, how .. " param " .. i)
        end
      end
    end)
  end

  it("state_tensors without metadata still restores (float32 hyperparameters)", function()
    local params = fresh()
    local opt = optim.Adam(params, { lr = 0.01 })
    grads(params, 1); opt:step()
    local t = opt:state_tensors()
    local opt2 = optim.Adam({ params[1]:detach():clone():requires_grad_(), params[2]:detach():clone():requires_grad_() }, { lr = 1 })
    opt2:load_state_tensors(t)
    assert.is_true(math.abs(opt2.param_groups[1].lr - 0.01) < 1e-9)
    assert.are.equal(1, opt2.state[opt2.param_groups[1].params[1]].step)
    assert.are.equal("integer", math.type(opt2.state[opt2.param_groups[1].params[1]].step))
  end)
end)

describe("optim schedulers", function()
  local function opt_with(lr)
    return optim.SGD({ param({ 1 }) }, { lr = lr })
  end
  local function run(sched, n)
    local out = { sched:get_last_lr()[1] }
    for _ = 2, n do sched.optimizer:step(); sched:step(); out[#out + 1] = sched:get_last_lr()[1] end
    return out
  end
  local function close_list(got, exp, tol)
    assert.are.equal(#exp, #got)
    for i = 1, #exp do
      assert.is_true(math.abs(got[i] - exp[i]) <= (tol or 1e-12),
        string.format("entry %d: got %.17g, expected %.17g", i, got[i], exp[i]))
    end
  end

  it("ExponentialLR", function()
    local o = opt_with(1)
    close_list(run(optim.ExponentialLR(o, 0.5), 4), { 1, 0.5, 0.25, 0.125 })
    assert.are.equal(0.125, o.param_groups[1].lr)
  end)

  it("StepLR", function()
    close_list(run(optim.StepLR(opt_with(1), 2, 0.1), 6), { 1, 1, 0.1, 0.1, 0.01, 0.01 })
  end)

  it("CosineAnnealingLR follows the closed form", function()
    local T, emin = 10, 0.1
    local got = run(optim.CosineAnnealingLR(opt_with(1), T, emin), 31)
    local exp = {}
    for e = 0, 30 do exp[#exp + 1] = emin + (1 - emin) * (1 + math.cos(math.pi * e / T)) / 2 end
    close_list(got, exp, 1e-9)
    assert.is_true(math.abs(got[11] - emin) < 1e-12)
  end)

  it("LambdaLR, LinearLR, LinearWarmup, WarmupCosine", function()
    close_list(run(optim.LambdaLR(opt_with(2), function(e) return 1 / (e + 1) end), 4), { 2, 1, 2 / 3, 0.5 })
    -- torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=4), lr 1
    close_list(run(optim.LinearLR(opt_with(1), { start_factor = 0.5, total_iters = 4 }), 7),
      { 0.5, 0.625, 0.75, 0.875, 1, 1, 1 })
    close_list(run(optim.LinearWarmup(opt_with(1), 4), 6), { 0.25, 0.5, 0.75, 1, 1, 1 })
    local wc = run(optim.WarmupCosine(opt_with(1), 2, 6, 0), 8)
    close_list(wc, { 0.5, 1, 1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0, 0 })
    local f = optim.lr_scheduler.warmup_lambda(10)
    assert.are.equal(0.1, f(0)); assert.are.equal(1, f(9)); assert.are.equal(1, f(100))
  end)

  it("state_dict round trip resumes the schedule", function()
    local a = optim.CosineAnnealingLR(opt_with(1), 8)
    for _ = 1, 3 do a:step() end
    local sd = a:state_dict()
    local o2 = opt_with(1)
    local b = optim.CosineAnnealingLR(o2, 8)
    b:load_state_dict(sd)
    o2.param_groups[1].lr = a.optimizer.param_groups[1].lr
    a:step(); b:step()
    assert.is_true(math.abs(a:get_last_lr()[1] - b:get_last_lr()[1]) < 1e-15)
    assert.are.equal(4, b.last_epoch)
  end)

  it("schedules each parameter group from its own base lr", function()
    local o = optim.SGD({ { params = { param({ 1 }) }, lr = 1 }, { params = { param({ 1 }) }, lr = 0.1 } }, { lr = 5 })
    local s = optim.StepLR(o, 1, 0.5)
    s:step()
    close_list(s:get_last_lr(), { 0.5, 0.05 })
  end)
end)

describe("optim.clip_grad_norm_", function()
  it("scales the gradients to max_norm and returns the total norm", function()
    local a, b = param({ 0, 0 }), param({ 0 })
    set_grad(a, fdm.tensor({ 3, 4 })); set_grad(b, fdm.tensor({ 12 }))
    local n = optim.clip_grad_norm_({ a, b }, 1)
    assert.is_true(math.abs(n - 13) < 1e-5)
    local c = 1 / (13 + 1e-6)
    H.assert_close(a.grad, fdm.tensor({ 3 * c, 4 * c }), EXACT)
    H.assert_close(b.grad, fdm.tensor({ 12 * c }), EXACT)
  end)

  it("leaves small gradients alone; handles inf norm and missing grads", function()
    local a, b = param({ 0, 0 }), param({ 0 })
    set_grad(a, fdm.tensor({ 3, -4 }))
    assert.is_true(math.abs(optim.clip_grad_norm_({ a, b }, 100) - 5) < 1e-6)
    H.assert_close(a.grad, fdm.tensor({ 3, -4 }), { atol = 0, rtol = 0 })
    assert.are.equal(4, optim.clip_grad_norm_({ a }, 2, math.huge))
    H.assert_close(a.grad, fdm.tensor({ 1.5, -2 }), EXACT)
    assert.are.equal(0, optim.clip_grad_norm_({ b }, 1))
  end)
end)

describe("optim.EMA", function()
  it("averages parameters, copies buffers, copy_to/store/restore", function()
    local net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm2d(2))
    local w0 = net[1].weight:clone()
    local ema = optim.EMA(net, 0.9)
    fdm.no_grad(function()
      net[1].weight:fill_(1)
      net[2].running_mean:fill_(5)
    end)
    ema:update(net)
    local sd = ema:state_dict()
    H.assert_close(sd["0.weight"], w0 * 0.9 + 0.1, EXACT)
    H.assert_close(sd["1.running_mean"], fdm.full({ 2 }, 5), EXACT)
    ema:update(net)
    H.assert_close(sd["0.weight"], (w0 * 0.9 + 0.1) * 0.9 + 0.1, EXACT)

    ema:store(net)
    ema:copy_to(net)
    H.assert_close(net[1].weight, sd["0.weight"], EXACT)
    assert.is_true(net[1].weight.requires_grad)
    ema:restore(net)
    H.assert_close(net[1].weight, fdm.ones(2, 2), EXACT)

    -- the EMA state loads into a fresh model
    local other = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm2d(2))
    other:load_state_dict(ema:state_dict())
    H.assert_close(other[1].weight, sd["0.weight"], EXACT)
    local ema2 = optim.EMA(other, 0.9)
    ema2:load_state_dict(ema:state_dict())
    H.assert_close(ema2:state_dict()["0.weight"], sd["0.weight"], EXACT)
  end)

  it("warmup lowers the decay early on", function()
    local ema = optim.EMA(nn.Linear(1, 1), 0.999, { warmup = true })
    assert.is_true(math.abs(ema:current_decay() - 0.1) < 1e-12)
  end)
end)

describe("multi-tensor Adam (fdm.adam_multi_step_)", function()
  it("gives adam_step_'s numbers bit for bit on each parameter, amsgrad and AdamW too", function()
    for _, o in ipairs { { decoupled = false }, { decoupled = true, weight_decay = 0.05 }, { amsgrad = true } } do
      fdm.manual_seed(3)
      local n = 7
      local a, b = {}, {}
      for k = 1, n do
        local p = fdm.randn(k, 3)
        local g = fdm.randn(k, 3)
        a[k] = { p = p:clone(), g = g, m = fdm.zeros(k, 3), v = fdm.zeros(k, 3), x = fdm.zeros(k, 3) }
        b[k] = { p = p:clone(), g = g, m = fdm.zeros(k, 3), v = fdm.zeros(k, 3), x = fdm.zeros(k, 3) }
      end
      for step = 1, 3 do
        local opts = { lr = 1e-2, step = step, decoupled = o.decoupled, weight_decay = o.weight_decay or 0 }
        for k = 1, n do
          local e = a[k]
          opts.max_exp_avg_sq = o.amsgrad and e.x or nil
          fdm.adam_step_(e.p, e.g, e.m, e.v, opts)
        end
        opts.max_exp_avg_sq = nil
        local l = { {}, {}, {}, {}, {} }
        for k = 1, n do
          l[1][k], l[2][k], l[3][k], l[4][k], l[5][k] = b[k].p, b[k].g, b[k].m, b[k].v, b[k].x
        end
        fdm.adam_multi_step_(l[1], l[2], l[3], l[4], o.amsgrad and l[5] or nil, opts)
      end
      for k = 1, n do
        assert.is_true(fdm.eq(a[k].p, b[k].p):all():item(), "parameter " .. k)
        assert.is_true(fdm.eq(a[k].v, b[k].v):all():item(), "exp_avg_sq " .. k)
      end
    end
  end)

  it("checks its lists", function()
    local ok, err = pcall(fdm.adam_multi_step_, { fdm.zeros(2) }, {}, {}, {}, nil, {})
    assert.is_false(ok)
    assert.truthy(tostring(err):find("list #2 has 0 entries", 1, true), err)
    ok, err = pcall(fdm.adam_multi_step_, { fdm.zeros(2) }, { fdm.zeros(3) }, { fdm.zeros(2) }, { fdm.zeros(2) }, nil,
      { step = 1 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("gradient shape [3] differs", 1, true), err)
  end)
end)
