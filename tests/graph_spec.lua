-- tests for graphs (fdm.graph, docs/cuda.md "Graphs") without a GPU: the
-- device-side values a replayed graph reads (Adam's lr and step, the random
-- stream's offset) must give exactly the eager numbers, and the graph code
-- paths (capture bookkeeping, replays, the training loop's --graph, the
-- samplers' graph = true) run emulated (fdm.graph's emulate: each replay
-- runs the function again) on the CPU and on the fake device, bit for bit
-- against eager runs. The CUDA capture itself runs in tests/cuda/graphs.lua.
local fdm = require "fdm"
local H = require "helpers"
local flow = require "fdm.flow"
local unet = require "fdm.unet"
local train = require "fdm.train"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local EXACT = { atol = 0, rtol = 0 }

-- the devices the emulated paths run on: the CPU and the fake one when loaded
local function devices()
  local out = {}
  for _, d in ipairs(H.devices()) do if d == "cpu" or d == "fake" then out[#out + 1] = d end end
  return out
end

local function assert_same_params(a, b, label)
  local pa, pb = a:parameters(), b:parameters()
  assert.are.equal(#pa, #pb)
  for i = 1, #pa do H.assert_close(pb[i], pa[i], EXACT, label .. ": parameter " .. i) end
end

describe("device scalars: Adam and AdamW with lr and step in device tensors", function()
  local function train_steps(device, cls, opts, device_scalars)
    fdm.manual_seed(11)
    local net = fdm.nn.Sequential(fdm.nn.Linear(5, 9), fdm.nn.GELU(), fdm.nn.Linear(9, 3))
    if device ~= "cpu" then net:to(device) end
    local opt = cls(net:parameters(), opts)
    local sched = fdm.optim.ExponentialLR(opt, 0.6)
    if device_scalars then opt:use_device_scalars() end
    local x = fdm.randn(6, 5, { device = device })
    for _ = 1, 6 do
      local loss = (net(x) ^ 2):mean()
      opt:zero_grad()
      loss:backward()
      opt:step()
      sched:step()
    end
    return net, opt
  end

  for _, dev in ipairs(devices()) do
    for _, case in ipairs({
      { "Adam", fdm.optim.Adam, { lr = 0.02 } },
      { "Adam amsgrad, weight decay, maximize", fdm.optim.Adam, { lr = 0.02, amsgrad = true, weight_decay = 0.1, maximize = true } },
      { "AdamW", fdm.optim.AdamW, { lr = 0.02, weight_decay = 0.05 } },
    }) do
      it(case[1] .. " on " .. dev .. ": bit for bit the eager update, steps read back", function()
        local a, oa = train_steps(dev, case[2], case[3], false)
        local b, ob = train_steps(dev, case[2], case[3], true)
        assert_same_params(a, b, case[1])
        local sa, sb = oa:state_dict().state, ob:state_dict().state
        assert.are.equal(6, sa[0].step)
        assert.are.equal(sa[0].step, sb[0].step)
        H.assert_close(sb[0].exp_avg_sq, sa[0].exp_avg_sq, EXACT, "exp_avg_sq")
      end)
    end
  end

  it("the learning rate comes from the device tensor, not the call", function()
    local p = fdm.tensor({ 1, 2 }, { requires_grad = true })
    local opt = fdm.optim.Adam({ p }, { lr = 0.1 }):use_device_scalars()
    opt.param_groups[1].lr = 0   -- the next eager step writes lr = 0 before it runs
    p:zero_grad(); (p * fdm.tensor({ 1, 1 })):sum():backward()
    opt:step()
    H.assert_close(p, fdm.tensor({ 1, 2 }), EXACT)
  end)

  it("errors: SGD, a group whose parameters are at different steps, missing gradients", function()
    local p = fdm.tensor({ 1 }, { requires_grad = true })
    H.raises(function() fdm.optim.SGD({ p }, { lr = 1 }):use_device_scalars() end, "only Adam and AdamW")
    local q = fdm.tensor({ 2 }, { requires_grad = true })
    local opt = fdm.optim.Adam({ p, q }, { lr = 0.1 })
    p:zero_grad(); (p * 2):sum():backward()
    opt:step()   -- only p has a gradient: p at step 1, q at 0
    H.raises(function() opt:use_device_scalars() end, "different steps (1 and 0)")
    local opt2 = fdm.optim.Adam({ p, q }, { lr = 0.1 }):use_device_scalars()
    opt2:zero_grad(); (p * 2):sum():backward()
    H.raises(function() opt2:step() end, "every parameter of a group needs a gradient", "1 of 2")
    H.raises(function() fdm.adam_multi_step_({ p }, { p }, { p }, { p }, nil, { lr_tensor = fdm.zeros(1) }) end,
      "lr_tensor and step_tensor go together")
    H.raises(function()
      fdm.adam_multi_step_({ p }, { p }, { p }, { p }, nil, { lr_tensor = fdm.zeros(2), step_tensor = fdm.zeros(1) })
    end, "lr must be a one-element float32 tensor", "got 2 elements")
  end)
end)

describe("random draws at a device offset", function()
  for _, dev in ipairs(devices()) do
    it("a graph's draws on " .. dev .. " are the eager draws, and replays continue the stream", function()
      local function draws()
        return fdm.randn(5, 3, { device = dev }), fdm.rand(7, { device = dev }),
               fdm.randint(0, 10, { 9 }, { device = dev })
      end
      fdm.manual_seed(21)
      local eager = {}
      for k = 1, 3 do eager[k] = { draws() } end
      local eager_offset = fdm.get_rng_state().offset
      fdm.manual_seed(21)
      local g, a, b, c = fdm.graph(draws, { device = dev, emulate = true })
      local got = { { a:clone(), b:clone(), c:clone() } }
      for k = 2, 3 do
        local x, y, z = g:replay()
        got[k] = { x:clone(), y:clone(), z:clone() }
      end
      for k = 1, 3 do
        for j = 1, 3 do H.assert_close(got[k][j], eager[k][j], EXACT, ("run %d draw %d"):format(k, j)) end
      end
      assert.are.equal(eager_offset, fdm.get_rng_state().offset)
      -- an eager draw between replays: the next replay starts after it
      fdm.manual_seed(21)
      draws(); fdm.rand(3, { device = dev })
      local e2 = { draws() }
      fdm.manual_seed(21)
      g = fdm.graph(draws, { device = dev, emulate = true })
      fdm.rand(3, { device = dev })
      local x = g:replay()
      H.assert_close(x, e2[1], EXACT, "after an eager draw")
      g:free()
    end)
  end

  it("randperm and draws on another device are errors inside a graph", function()
    H.raises(function() fdm.graph(function() return fdm.randperm(5) end, { device = "cpu", emulate = true }) end,
      "randperm: not available inside a graph")
    if fdm.supports("fake", "copy") then
      H.raises(function() fdm.graph(function() return fdm.randn(2) end, { device = "fake", emulate = true }) end,
        "inside a graph on device 'fake', random draws must be made there too, not on 'cpu'")
    end
    assert.is_nil(fdm.graph_capturing())   -- a failed capture leaves no capture behind
  end)
end)

describe("fdm.graph", function()
  it("on the CPU (no graphs): the clear error, before any work", function()
    local ran = false
    H.raises(function() fdm.graph(function() ran = true end, { device = "cpu" }) end,
      "graphs need a device that supports them (cuda); device 'cpu' has none")
    assert.is_false(ran)
    H.raises(function() fdm.graph.check({ device = "cpu" }) end, "device 'cpu' has none")
    H.raises(function() fdm.graph(42) end, "a function expected, got number")
    H.raises(function() fdm.graph(function() end, "cuda") end, "options must be a table")
  end)

  if fdm.supports("fake", "copy") then
    it("inside a capture, copies between the host and the device are refused (:item(), :to())", function()
      local x = fdm.ones(3, { device = "fake" })
      H.raises(function() fdm.graph(function() return x:sum():item() end, { device = "fake", emulate = true }) end,
        "while a graph is being captured on 'fake'")
      H.raises(function() fdm.graph(function() return x:to("cpu") end, { device = "fake", emulate = true }) end,
        "do it outside the captured function")
      -- F.one_hot reads its labels on the host; flow.one_hot compares on the device instead
      local labels = fdm.tensor({ 3, 0, 9 }, { dtype = "int64" }):to("fake")
      local _, c = fdm.graph(function() return flow.one_hot(labels, 10) end, { device = "fake", emulate = true })
      H.assert_close(c, flow.one_hot(labels, 10), EXACT)
    end)
  end

  it("replays update the captured outputs in place; a freed graph says so", function()
    local x = fdm.tensor({ 1, 2, 3 })
    local g, y = fdm.graph(function() return x * 2 end, { device = "cpu", emulate = true })
    x:copy_(fdm.tensor({ 5, 6, 7 }))
    local y2 = g:replay()
    assert.are.equal(y, y2)
    H.assert_close(y, fdm.tensor({ 10, 12, 14 }), EXACT)
    g:free()
    H.raises(function() g:replay() end, "this graph was freed")
  end)

  it("a replay that draws differently from the capture is an error", function()
    local n = 4
    local g = fdm.graph(function() return fdm.rand(n) end, { device = "cpu", emulate = true })
    n = 400
    H.raises(function() g:replay() end, "this run drew 100 random blocks, the captured run 1")
  end)
end)

describe("graphed samplers (emulated) give the eager samples", function()
  for _, dev in ipairs(devices()) do
    it("flow.sample_class and flow.sample_time on " .. dev, function()
      fdm.manual_seed(2)
      local cnet = unet.ClassConditionalUNet(1, 4, 10)
      local tnet = unet.TimeConditionalUNet(1, 4)
      if dev ~= "cpu" then cnet:to(dev); tnet:to(dev) end
      local function sample(graph)
        return flow.with_rng(5, function()
          local a, snaps = flow.sample_class(cnet, { 0, 7, 3 },
            { steps = 5, guidance = 3, device = dev, graph = graph, snapshots = 2 })
          local b = flow.sample_time(tnet, 2, { steps = 4, device = dev, graph = graph })
          return a, snaps, b
        end)
      end
      local a, sa, b = sample(nil)
      local ga, gsa, gb = sample({ emulate = true })
      H.assert_close(ga, a, EXACT, "sample_class")
      H.assert_close(gb, b, EXACT, "sample_time")
      assert.are.equal(#sa, #gsa)
      for i = 1, #sa do H.assert_close(gsa[i], sa[i], EXACT, "snapshot " .. i) end
    end)
  end

  it("graph = true on the CPU is the clear error", function()
    local net = unet.TimeConditionalUNet(1, 4)
    H.raises(function() flow.sample_time(net, 1, { steps = 2, graph = true }) end,
      "graphs need a device that supports them (cuda); device 'cpu' has none")
  end)
end)

describe("the DDPM sampler (fdm.diffusion) with graph (emulated) gives the eager samples", function()
  local D = require "fdm.diffusion"
  local M = require "fdm.ddpm_model"
  for _, dev in ipairs(devices()) do
    it("CFG, clipping, fixed variance, inpainting and a hook on " .. dev, function()
      fdm.manual_seed(6)
      local model = M.new { hidden = 4, device = dev }
      model:eval()
      local cond = fdm.F.one_hot(fdm.tensor({ 1, 5 }, { dtype = "int64" }), 10):float():to(dev)
      local uncond = fdm.zeros(1, 10, { device = dev })
      local x_orig = fdm.rand(2, 1, 28, 28):to(dev)
      local mask = fdm.ge(fdm.rand(2, 1, 28, 28), 0.5):float():to(dev)
      local function sample(graph)
        return flow.with_rng(8, function()
          local steps = {}
          local s = D.Sampler(model, { n = 2, cond = cond, uncond = uncond, cfg = 3, steps = 6, graph = graph,
            inpaint = { x_orig = x_orig, mask = mask } })
          s:add_hook(function(smp, ev) steps[#steps + 1] = ev.x0_hat:clone() end)
          return s:run(), steps
        end)
      end
      local a, ha = sample(nil)
      local b, hb = sample({ emulate = true })
      H.assert_close(b, a, EXACT, "samples")
      assert.are.equal(5, #ha)
      assert.are.equal(#ha, #hb)
      for i = 1, #ha do H.assert_close(hb[i], ha[i], EXACT, "x0_hat of step " .. i) end
    end)
  end

  -- a small DDPM on the fake device (nil without it)
  local function fake_model()
    if not fdm.supports("fake", "copy") then return nil end
    fdm.manual_seed(7)
    local m = M.new { hidden = 4, device = "fake" }
    m:eval()
    return m
  end

  it("dynamic thresholding (a quantile per sample) on the fake device", function()
    local model = fake_model()
    if not model then return end
    local function sample(graph)
      return flow.with_rng(8, function() return D.sample(model, 2, { steps = 7, threshold = true, graph = graph }) end)
    end
    H.assert_close(sample({ emulate = true }), sample(nil), EXACT)
  end)

  it("a list ending in -1 (IFPipeline's): the clean last step runs eagerly and draws no noise", function()
    local model = fake_model()
    if not model then return end
    local function sample(graph)
      return flow.with_rng(8, function()
        local x = D.sample(model, 2, { timesteps = { 900, 600, 300, 0, -1 }, graph = graph })
        return x, fdm.randn(4, { device = "fake" })   -- the stream after: the same draws taken
      end)
    end
    local a, ra = sample(nil)
    local b, rb = sample({ emulate = true })
    H.assert_close(b, a, EXACT)
    H.assert_close(rb, ra, EXACT, "the random stream after sampling")
  end)

  it("graph = true on the CPU is the clear error", function()
    local model = M.new { hidden = 4 }
    H.raises(function() D.Sampler(model, { n = 1, steps = 3, graph = true }) end,
      "graphs need a device that supports them (cuda); device 'cpu' has none")
  end)
end)

describe("train_ddpm's step (fdm.ddpm_model's loss) under graphs", function()
  local M = require "fdm.ddpm_model"
  local Step = require "fdm.graph_step"

  it("the loss draws and computes on the device: the numbers of the former CPU form", function()
    fdm.manual_seed(3)
    local model = M.new { hidden = 4 }
    local x, y = fdm.rand(5, 1, 28, 28), fdm.tensor({ 1, 2, 3, 4, 5 }, { dtype = "int64" })
    -- the loss as train_ddpm computed it before (t, mask drawn on the CPU; index_select)
    local function cpu_form()
      local n = 5
      local x0 = M.to_model(x)
      local t = fdm.randint(0, model.T, { n })
      local ab = fdm.index_select(model.schedule.alphas_cumprod, 1, t):reshape(n, 1, 1, 1)
      local eps = fdm.randn_like(x0)
      local x_t = x0 * fdm.sqrt(ab) + eps * fdm.sqrt(1 - ab)
      local c = fdm.F.one_hot(y, M.NUM_CLASSES):float()
      local mask = unet.class_dropout_mask(n, 0.3)
      return fdm.F.mse_loss(model.net(x_t, c, t:float() / model.T, mask), eps)
    end
    fdm.manual_seed(9)
    local a = cpu_form()
    fdm.manual_seed(9)
    local b = M.loss(model, x, y, { p_uncond = 0.3 })
    H.assert_close(b, a, EXACT)
  end)

  -- train_ddpm's loop: a per-step lr, an EMA updated after every step
  local function run(dev, graph)
    fdm.manual_seed(4)
    local model = M.new { hidden = 4, device = dev }
    local net = model.net
    net:train()
    local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-2 })
    local ema = fdm.optim.EMA(net, 0.9, { warmup = true })
    local step = Step.new(function(x, y) return M.loss(model, x, y, { p_uncond = 0.2 }) end, opt, dev,
      graph and { device = dev, emulate = true } or nil, 3)
    local xs, ys = fdm.rand(6, 4, 1, 28, 28), fdm.randint(0, 10, { 6, 4 })
    local losses = {}
    for i = 1, 6 do
      opt.param_groups[1].lr = 1e-2 / i
      local loss = step:step(xs[i], ys[i])
      ema:update(net)
      for _, l in ipairs(graph and step:take() or { loss:item() }) do losses[#losses + 1] = l end
    end
    if graph then for _, l in ipairs(step:flush()) do losses[#losses + 1] = l end end
    step:free()
    return losses, net, ema
  end

  for _, dev in ipairs(devices()) do
    it("graphed (emulated) on " .. dev .. ": losses, parameters and the EMA bit for bit", function()
      local le, ne, ee = run(dev, false)
      local lg, ng, eg = run(dev, true)
      assert.are.equal(6, #le)
      assert.are.same(le, lg)
      assert_same_params(ne, ng, "after 6 steps")
      for k, v in pairs(ee.shadow) do H.assert_close(eg.shadow[k], v, EXACT, "EMA " .. k) end
    end)
  end
end)

describe("fdm.graph_step", function()
  it("captures only after a warm-up of the same batch shape; other shapes run eagerly", function()
    local Step = require "fdm.graph_step"
    local function run(graph)
      fdm.manual_seed(2)
      local net = fdm.nn.Linear(3, 1)
      local opt = fdm.optim.Adam(net:parameters(), { lr = 0.1 })
      local step = Step.new(function(x, y) return ((net(x) - y) ^ 2):mean() end, opt, "cpu",
        graph and { device = "cpu", emulate = true } or nil)
      local captured_at, losses = nil, {}
      for i, n in ipairs({ 2, 4, 4, 4, 2, 4 }) do
        local loss = step:step(fdm.randn(n, 3), fdm.randn(n, 1), i)
        if graph and step.g and not captured_at then captured_at = i end
        losses[i] = not graph and loss:item() or nil
      end
      if graph then losses = step:flush() end
      return losses, captured_at, net
    end
    local le, _, ne = run(false)
    local lg, at, ng = run(true)
    assert.are.equal(3, at)   -- 2 warms up shape 2, 4 shape 4, the next 4 is captured
    assert.are.same(le, lg)
    assert_same_params(ne, ng, "after 6 steps")
  end)
end)

describe("fdm.train --graph (emulated) matches the eager loop", function()
  -- 40 images in batches of 16: two full batches (warm-up, capture) then a
  -- short one (eager) per epoch; a scheduler changes the lr between epochs
  local function run(dev, graph)
    fdm.manual_seed(9)
    local ds = train.fake_dataset(40, 3)
    local net = unet.ClassConditionalUNet(1, 4, 10)
    if dev ~= "cpu" then net:to(dev) end
    local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-2 })
    local sched = fdm.optim.ExponentialLR(opt, 0.5)
    local out = H.tmpdir()
    local r = train.run {
      args = { epochs = 2, device = dev, graph = graph, max_batches = 0 },
      name = "graph_test", out = out, model = net, optimizer = opt, scheduler = sched,
      loader = train.loader(ds, { batch = 16, shuffle = true }),
      loss = function(x, y) return flow.class_loss(net, x, y, 0.3, 10) end,
      print = function() end, quiet = true, graph_emulate = graph,
    }
    local rng = fdm.get_rng_state()
    os.execute("rm -rf '" .. out .. "'")
    return r, net, opt, rng
  end

  for _, dev in ipairs(devices()) do
    it("on " .. dev .. ": losses, parameters, Adam's state and the random stream bit for bit", function()
      local re, ne, oe, rnge = run(dev, false)
      local rg, ng, og, rngg = run(dev, true)
      assert.are.equal(6, #re.history.loss)
      assert.are.same(re.history.loss, rg.history.loss)
      assert_same_params(ne, ng, "after 2 epochs")
      assert.are.equal(oe:state_dict().state[0].step, og:state_dict().state[0].step)
      assert.are.same(rnge, rngg)
    end)
  end

  it("--graph with --device cpu is a usage error naming the device (flow_class, train_ddpm, sample)", function()
    local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end
    local out = H.tmpdir()
    local text, rc = H.sh("FDM_FAKE_DATA=1 " .. q(BIN) .. " flow_class --graph --epochs 1 --max-batches 1 --out " .. q(out))
    os.execute("rm -rf " .. q(out))
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("--graph: CUDA graphs need --device cuda; device 'cpu' has none", 1, true), text)
    text, rc = H.sh(q(BIN) .. " train_ddpm --graph --subset 8 --out " .. q(out))
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("--graph: CUDA graphs need --device cuda; device 'cpu' has none", 1, true), text)
    text, rc = H.sh(q(BIN) .. " sample --graph --steps 3")
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("--graph: CUDA graphs need --device cuda; device 'cpu' has none", 1, true), text)
  end)
end)

describe("tests/cuda/graphs.lua (the GPU check)", function()
  it("runs on the fake device with emulated graphs and passes", function()
    if not fdm.supports("fake", "copy") then return end
    local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end
    local text, rc = H.sh("FDM_GRAPHS_DEVICE=fake FDM_FAKE_BACKEND=" .. q(os.getenv("FDM_FAKE_BACKEND")) .. " " ..
      q(BIN) .. " " .. q(H.here("cuda/graphs.lua")))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("graphs on fake (emulated): 6 passed, 0 failed", 1, true), text)
  end)
end)
