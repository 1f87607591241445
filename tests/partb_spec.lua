-- tests for Part B's training tools: fdm.cli, fdm.checkpoint, fdm.flow,
-- fdm.train and the scripts (scripts/noising, denoiser, flow_time,
-- flow_class). The scripts run on FDM_FAKE_DATA=1 (synthetic digits, see
-- train.fake_dataset) so no data files are needed; the exact-resume tests
-- compare a 2-epoch run with 1 epoch + --resume + 1 epoch, bit for bit.
local fdm = require "fdm"
local H = require "helpers"
local cli = require "fdm.cli"
local ckpt = require "fdm.checkpoint"
local flow = require "fdm.flow"
local train = require "fdm.train"
local unet = require "fdm.unet"
local F = fdm.F

local BIN = os.getenv("FDM_BIN") or "build/fdm"

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -p " .. q(name)))
  return name
end

-- runs `fdm script args` with fake data; returns output (stdout+stderr) and exit code
local function run_script(script, args)
  local words = { "FDM_FAKE_DATA=1", q(BIN), q(script) }
  for _, a in ipairs(args) do words[#words + 1] = q(a) end
  local p = assert(io.popen(table.concat(words, " ") .. " 2>&1 </dev/null; echo \"__rc=$?\"", "r"))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("__rc=(%d+)\n$"))
  return out:gsub("__rc=%d+\n$", ""), code
end

local exists = H.exists

local function assert_same_tensors(a, b, label)
  local na, nb = 0, 0
  for k in pairs(a) do na = na + 1 end
  for k in pairs(b) do nb = nb + 1 end
  assert.are.equal(na, nb, label .. ": number of tensors")
  for k, v in pairs(a) do
    assert(b[k] ~= nil, label .. ": missing " .. k)
    H.assert_close(b[k], v, { atol = 0, rtol = 0 }, label .. ": " .. k)
  end
end

---------------------------------------------------------------- cli
describe("fdm.cli", function()
  local spec = {
    name = "t", defaults = { epochs = 5, lr = 1e-4 },
    options = { { "pure-noise", "flag", false, "pure" }, { "sigma", "number", 0.5, "noise" },
                { "list", "ints", {}, "some ints" } },
  }

  it("defaults, the script's overrides, --k v, --k=v, flags, underscores", function()
    local a = cli.parse({}, spec)
    assert.are.equal(5, a.epochs); assert.are.equal(1e-4, a.lr); assert.are.equal(64, a.batch)
    assert.are.equal("mnist", a.dataset); assert.are.equal("cpu", a.device); assert.are.equal(false, a.resume)
    assert.are.equal("out/t", a.out); assert.are.equal(300, a.steps); assert.are.equal(5, a.cfg)
    assert.are.equal(false, a.pure_noise)
    a = cli.parse({ "--epochs", "3", "--lr=0.01", "--pure-noise", "--dataset", "fashion", "--resume",
                    "--list", "1,5,10", "--subset=256", "--out", "/tmp/x" }, spec)
    assert.are.equal(3, a.epochs); assert.are.equal("integer", math.type(a.epochs))
    assert.are.equal(0.01, a.lr); assert.is_true(a.pure_noise); assert.are.equal("fashion", a.dataset)
    assert.is_true(a.resume); assert.are.same({ 1, 5, 10 }, a.list); assert.are.equal(256, a.subset)
    assert.are.equal("/tmp/x", a.out)
    assert.is_true(a.given.epochs); assert.is_nil(a.given.batch)
  end)

  it("unknown options, bad values, missing values and positional words are one-line usage errors", function()
    local function usage(argv)
      local ok, err = pcall(cli.parse, argv, spec)
      assert.is_false(ok)
      assert.is_true(cli.is_usage_error(err), tostring(err))
      local msg = tostring(err)
      assert.falsy(msg:find("\n"), msg)
      return msg
    end
    local err = usage({ "--epoch", "3" })
    assert.truthy(err:find("unknown option --epoch (did you mean --epochs?)", 1, true), err)
    assert.truthy(err:find("--epochs", 1, true)); assert.truthy(err:find("--pure-noise", 1, true))
    assert.truthy(usage({ "--epochs", "2.5" }):find("--epochs expects an integer >= 1, got '2.5'", 1, true))
    assert.truthy(usage({ "--dataset", "cifar" }):find("one of mnist, fashion", 1, true))
    assert.truthy(usage({ "--batch", "0" }):find("an integer >= 1, got '0'", 1, true))
    assert.truthy(usage({ "--lr" }):find("--lr needs a value: a number", 1, true))
    assert.truthy(usage({ "--lr", "-1" }):find("--lr expects a number >= 0, got '-1'", 1, true))
    assert.truthy(usage({ "stray" }):find("unexpected argument 'stray'", 1, true))
    assert.truthy(usage({ "--list", "1,x" }):find("--list expects comma-separated integers, got '1,x'", 1, true))
  end)

  it("ranges apply to every element of a list; numbers lists; common options by name; positional words", function()
    local s = { name = "r", common = { "seed", "out" }, options = {
      { "i", "ints", { 1 }, "indices", min = 0, max = 32 }, { "x", "numbers", { 0.5 }, "levels", min = 0 } },
      positional = { name = "RUN", min = 1 } }
    local a = cli.parse({ "--i", "0,32", "--x", "0,1.5", "p", "--", "--q" }, s)
    assert.are.same({ 0, 32 }, a.i); assert.are.same({ 0.0, 1.5 }, a.x); assert.are.same({ "p", "--q" }, a.positional)
    assert.are.equal(0, a.seed); assert.are.equal("out/r", a.out); assert.is_nil(a.epochs)
    local ok, err = pcall(cli.parse, { "--i", "1,50", "p" }, s)
    assert.is_false(ok); assert.truthy(tostring(err):find("each in 0..32, got '1,50'", 1, true))
    ok, err = pcall(cli.parse, { "--x", "0.5,abc", "p" }, s)
    assert.is_false(ok); assert.truthy(tostring(err):find("comma-separated numbers, each >= 0, got '0.5,abc'", 1, true))
    ok, err = pcall(cli.parse, { "--epochs", "3", "p" }, s)
    assert.is_false(ok); assert.truthy(tostring(err):find("unknown option --epochs", 1, true))
    ok, err = pcall(cli.parse, {}, s)
    assert.is_false(ok); assert.truthy(tostring(err):find("needs at least 1 RUN argument", 1, true))
    local help = cli.help(s)
    assert.falsy(help:find("--epochs", 1, true)); assert.truthy(help:find("--seed N", 1, true))
  end)

  it("--help returns the listing with types and defaults", function()
    local a, help = cli.parse({ "--help" }, spec)
    assert.is_nil(a)
    for _, w in ipairs({ "--epochs N", "(default: 5)", "--dataset mnist|fashion", "--device auto|cpu|cuda",
                         "--resume", "--cfg X", "--pure-noise", "--help" }) do
      assert.truthy(help:find(w, 1, true), "help lacks " .. w)
    end
  end)
end)

---------------------------------------------------------------- checkpoint
describe("fdm.checkpoint", function()
  it("model, Adam, ExponentialLR, RNG, epoch and history round-trip exactly", function()
    fdm.manual_seed(3)
    local net = unet.TimeConditionalUNet(1, 4)
    local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-2 })
    local sched = fdm.optim.ExponentialLR(opt, 0.1 ^ (1 / 7))
    for _ = 1, 2 do
      local loss = flow.time_loss(net, fdm.rand(4, 1, 28, 28))
      opt:zero_grad(); loss:backward(); opt:step(); sched:step()
    end
    local hist = { loss = { 0.1, 1 / 3, 2e-300, 12345.678901234567 }, epoch_loss = { math.pi } }
    local path = os.tmpname()
    ckpt.save(path, { model = net, optimizer = opt, scheduler = sched, epoch = 2, history = hist,
                      meta = { hidden = 4, name = "x" } })
    local rng = fdm.get_rng_state()
    local expect_next = fdm.rand(5)

    fdm.manual_seed(99)
    local net2 = unet.TimeConditionalUNet(1, 4)
    local opt2 = fdm.optim.Adam(net2:parameters(), { lr = 1e-2 })
    local sched2 = fdm.optim.ExponentialLR(opt2, 0.5)
    local st = ckpt.load(path, { model = net2, optimizer = opt2, scheduler = sched2 })
    assert.are.equal(2, st.epoch)
    assert.are.same(hist, st.history)
    assert.are.same({ hidden = 4, name = "x" }, st.meta)
    assert.are.same(rng, st.rng)
    H.assert_close(fdm.rand(5), expect_next, { atol = 0, rtol = 0 }, "rng restored")
    assert_same_tensors(net:state_dict(), net2:state_dict(), "model")
    assert.are.equal(opt.param_groups[1].lr, opt2.param_groups[1].lr)
    assert.are.same(sched:state_dict(), sched2:state_dict())
    local t1 = opt:state_tensors()
    local t2 = opt2:state_tensors()
    assert_same_tensors(t1, t2, "adam")
    -- the final-weights file loads into a fresh model
    ckpt.save_model(path, net, { hidden = 4 })
    local net3 = unet.TimeConditionalUNet(1, 4)
    local meta = ckpt.load_model(path, net3)
    assert.are.equal("4", meta.hidden)
    assert_same_tensors(net:state_dict(), net3:state_dict(), "model file")
    os.remove(path)
  end)

  it("refuses a file that is not a checkpoint", function()
    local path = os.tmpname()
    fdm.io.save_safetensors(path, { a = fdm.zeros(1) })
    assert.has_error(function() ckpt.load(path, {}) end)
    os.remove(path)
  end)
end)

---------------------------------------------------------------- flow
describe("fdm.flow", function()
  it("interpolate: x_t = (1-t) x0 + t x1 and u = x1 - x0", function()
    local x1, x0 = fdm.rand(3, 1, 28, 28), fdm.randn(3, 1, 28, 28)
    local t = fdm.tensor({ 0, 0.25, 1 })
    local xt, tt, u = flow.interpolate(x1, t, x0)
    H.assert_close(xt[1], x0[1], { atol = 0, rtol = 0 })
    H.assert_close(xt[3], x1[3], { atol = 1e-7, rtol = 0 })
    H.assert_close(xt[2], x0[2] * 0.75 + x1[2] * 0.25, { atol = 1e-6, rtol = 1e-6 })
    H.assert_close(u, x1 - x0, { atol = 0, rtol = 0 })
    assert.are.same({ 3 }, tt.shape)
  end)

  it("samplers: shapes, reproducible under a seed, the net's mode restored", function()
    fdm.manual_seed(1)
    local tc = unet.TimeConditionalUNet(1, 4)
    local a = flow.with_rng(5, function() return flow.sample_time(tc, 3, { steps = 4 }) end)
    local b = flow.with_rng(5, function() return flow.sample_time(tc, 3, { steps = 4 }) end)
    assert.are.same({ 3, 1, 28, 28 }, a.shape)
    H.assert_close(a, b, { atol = 0, rtol = 0 })
    assert.is_true(tc.training)
    local x, snaps = flow.sample_time(tc, 2, { steps = 6, snapshots = 2 })
    assert.are.equal(4, #snaps)
    H.assert_close(snaps[4], x, { atol = 0, rtol = 0 })
    local cc = unet.ClassConditionalUNet(1, 4)
    local c1 = flow.with_rng(5, function() return flow.sample_class(cc, { 0, 1, 2, 9 }, { steps = 3 }) end)
    local c2 = flow.with_rng(5, function() return flow.sample_class(cc, { 0, 1, 2, 9 }, { steps = 3 }) end)
    assert.are.same({ 4, 1, 28, 28 }, c1.shape)
    H.assert_close(c1, c2, { atol = 0, rtol = 0 })
  end)

  it("Euler sampling is x += u(x, i/T)/T; CFG is u_u + g (u_c - u_u) with c = 0 unconditional", function()
    fdm.manual_seed(2)
    local cc = unet.ClassConditionalUNet(1, 4)
    cc:eval()
    local x0 = fdm.randn(2, 1, 28, 28)
    local labels = { 3, 7 }
    local c = F.one_hot(fdm.tensor(labels, { dtype = "int64" }), 10):float()
    local T, g = 3, 5
    local x = x0:clone()
    fdm.no_grad(function()
      for i = 0, T - 1 do
        local t = fdm.full({ 2 }, i / T)
        local uc, uu = cc(x, c, t), cc(x, fdm.zeros(2, 10), t)
        x = x + (uu + (uc - uu) * g) / T
      end
    end)
    cc:train()
    local got = flow.sample_class(cc, labels, { steps = T, guidance = g, x0 = x0 })
    H.assert_close(got, x, { atol = 1e-5, rtol = 1e-5 })
    assert.is_true(cc.training)
  end)

  it("losses are scalars with gradients; the pure-noise denoiser loss ignores x's noise", function()
    local x = fdm.rand(2, 1, 28, 28)
    local net = unet.UnconditionalUNet(1, 4)
    for _, l in ipairs({ flow.denoiser_loss(net, x, 0.5), flow.denoiser_loss(net, x, "pure") }) do
      assert.are.same({}, l.shape)
      l:backward()
    end
    local cc = unet.ClassConditionalUNet(1, 4)
    local l = flow.class_loss(cc, x, fdm.tensor({ 1, 2 }, { dtype = "int64" }), 0.1)
    assert.are.same({}, l.shape)
  end)

  it("parameter counts as tests/unet_spec.lua (PyTorch): 7891073, 1996417, 2019201", function()
    assert.are.equal(7891073, unet.UnconditionalUNet(1, 128):num_parameters())
    assert.are.equal(1996417, unet.TimeConditionalUNet(1, 64):num_parameters())
    assert.are.equal(2019201, unet.ClassConditionalUNet(1, 64, 10):num_parameters())
  end)
end)

---------------------------------------------------------------- train (in process)
describe("fdm.train", function()
  local function setup(epochs, extra)
    local args = cli.parse({ "--epochs", tostring(epochs), "--hidden", "4", "--subset", "256",
                             "--batch", "64", "--seed", "11" }, { name = "t", options = train.OPTIONS })
    for k, v in pairs(extra or {}) do args[k] = v end
    fdm.manual_seed(args.seed)
    local ds = train.fake_dataset(args.subset, 7)
    local loader = train.loader(ds, { batch = args.batch, shuffle = true })
    local net = unet.TimeConditionalUNet(1, args.hidden)
    local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-2 })
    local sched = fdm.optim.ExponentialLR(opt, 0.1 ^ (1 / epochs))
    return { args = args, name = "t", model = net, optimizer = opt, scheduler = sched, loader = loader,
             meta = { hidden = args.hidden }, quiet = true,
             loss = function(x) return flow.time_loss(net, x) end, print = function() end,
             after_epoch = function() fdm.rand(10) end }   -- draws numbers: must not disturb training
  end

  it("2 epochs == 1 epoch + resume + 1 epoch, bit for bit (weights, Adam, lr, loss history)", function()
    local d1, d2 = tmpdir(), tmpdir()
    local c = setup(2, { out = d1 })
    local full = train.run(c)
    local c2 = setup(2, { out = d2, stop_after = 1 })
    local part = train.run(c2)
    assert.is_true(part.stopped)
    assert.are.equal(1, part.epoch)
    assert.is_false(exists(d2 .. "/model.safetensors"))
    local c3 = setup(2, { out = d2, resume = true })
    local resumed = train.run(c3)
    assert.are.equal(2, resumed.epoch)
    assert_same_tensors(c.model:state_dict(), c3.model:state_dict(), "weights")
    assert_same_tensors(c.optimizer:state_tensors(), c3.optimizer:state_tensors(), "adam")
    assert.are.equal(c.optimizer.param_groups[1].lr, c3.optimizer.param_groups[1].lr)
    assert.are.same(full.history.loss, resumed.history.loss)
    assert.are.same(full.history.epoch_loss, resumed.history.epoch_loss)
    assert.are.equal(2 * 4, #resumed.history.loss)
    assert.is_true(exists(d2 .. "/loss.png"))
    assert_same_tensors(fdm.io.load_safetensors(d1 .. "/model.safetensors"),
      fdm.io.load_safetensors(d2 .. "/model.safetensors"), "model files")
    -- a resume with other settings is refused
    local c4 = setup(2, { out = d2, resume = true })
    c4.meta = { hidden = 8 }
    local ok, err = pcall(train.run, c4)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("hidden", 1, true))
    os.execute("rm -rf " .. q(d1) .. " " .. q(d2))
  end)

  it("the loss falls over a short run", function()
    local d = tmpdir()
    local c = setup(3, { out = d })
    local r = train.run(c)
    local h = r.history.epoch_loss
    assert.are.equal(3, #h)
    assert.is_true(h[3] < h[1], string.format("epoch losses %g -> %g", h[1], h[3]))
    os.execute("rm -rf " .. q(d))
  end)

  it("milestones: 1, 5, 10 for 10 epochs; 1 and 5 for the denoiser", function()
    assert.are.same({ 1, 5, 10 }, (train.milestones(10)))
    assert.are.same({ 1, 5 }, (train.milestones(5, nil, true)))
    assert.are.same({ 1 }, (train.milestones(1)))
    assert.are.same({ 2, 3 }, (train.milestones(3, { 3, 2, 9 })))
  end)
end)

---------------------------------------------------------------- scripts
describe("Part B scripts (fake data)", function()
  it("flow_class: 2 epochs == --stop-after 1, then --resume (weights and loss history bit-identical)", function()
    local d1, d2 = tmpdir(), tmpdir()
    local common = { "--hidden", "4", "--subset", "256", "--epochs", "2", "--steps", "2", "--per-digit", "1" }
    local function with(extra)
      local a = {}
      for _, v in ipairs(common) do a[#a + 1] = v end
      for _, v in ipairs(extra) do a[#a + 1] = v end
      return a
    end
    local out, code = run_script("scripts/flow_class.lua", with({ "--out", d1 }))
    assert.are.equal(0, code, out)
    assert.truthy(out:find("images/s", 1, true))
    -- --hidden 4 is not the recipe's size: the projection says so
    assert.truthy(out:find("projected at this speed (D=4, batch 64: not the recipe's sizes", 1, true), out)
    out, code = run_script("scripts/flow_class.lua", with({ "--out", d2, "--stop-after", "1" }))
    assert.are.equal(0, code, out)
    out, code = run_script("scripts/flow_class.lua", with({ "--out", d2, "--resume" }))
    assert.are.equal(0, code, out)
    assert.truthy(out:find("resumed from", 1, true))
    assert_same_tensors(fdm.io.load_safetensors(d1 .. "/model.safetensors"),
      fdm.io.load_safetensors(d2 .. "/model.safetensors"), "model")
    local a = ckpt.load(d1 .. "/checkpoint.safetensors", {})
    local b = ckpt.load(d2 .. "/checkpoint.safetensors", {})
    assert.are.same(a.history.loss, b.history.loss)
    assert.are.equal(8, #a.history.loss)
    for _, f in ipairs({ "loss.png", "samples_epoch01.png", "samples_epoch02.png", "samples.png" }) do
      assert.is_true(exists(d2 .. "/" .. f), f)
    end
    os.execute("rm -rf " .. q(d1) .. " " .. q(d2))
  end)

  it("noising, denoiser (incl. --pure-noise) and flow_time write their pictures", function()
    local d = tmpdir()
    local out, code = run_script("scripts/noising.lua", { "--out", d .. "/n" })
    assert.are.equal(0, code, out)
    assert.is_true(exists(d .. "/n/noising.png"))
    out, code = run_script("scripts/denoiser.lua", { "--hidden", "4", "--subset", "256", "--epochs", "1",
                                                     "--out", d .. "/d" })
    assert.are.equal(0, code, out)
    for _, f in ipairs({ "loss.png", "test_epoch01.png", "ood_sigmas.png", "model.safetensors" }) do
      assert.is_true(exists(d .. "/d/" .. f), f)
    end
    out, code = run_script("scripts/denoiser.lua", { "--hidden", "4", "--subset", "256", "--epochs", "1",
                                                     "--pure-noise", "--out", d .. "/p" })
    assert.are.equal(0, code, out)
    assert.truthy(out:find("mean image", 1, true))
    assert.is_true(exists(d .. "/p/mean_vs_output.png"))
    out, code = run_script("scripts/flow_time.lua", { "--hidden", "4", "--subset", "128", "--epochs", "1",
                                                      "--steps", "2", "--samples", "4", "--out", d .. "/f" })
    assert.are.equal(0, code, out)
    assert.is_true(exists(d .. "/f/samples_epoch01.png"))
    os.execute("rm -rf " .. q(d))
  end)

  it("tools/nosched_study.sh: one run per schedule, scored, in one table; --no-scheduler changes epoch 2 on", function()
    local d = tmpdir()
    local out, rc = H.sh("FDM_FAKE_DATA=1 FDM=" .. q(BIN) .. " CONFIGS='sched:1e-2 const:1e-2' THREADS=1 EPOCHS=2"
      .. " HIDDEN=4 SUBSET=128 EVAL_N=10 EVAL_STEPS=2 tools/nosched_study.sh " .. q(d))
    assert.are.equal(0, rc, out)
    local rows = {}
    for kind, lr, loss, acc in H.slurp(d .. "/summary.md"):gmatch("| (%a+) | ([%d.e-]+) | ([%d.]+) | %d+ | ([%d.]+)%% |") do
      rows[#rows + 1] = { kind = kind, lr = lr, loss = tonumber(loss), acc = tonumber(acc) }
    end
    assert.are.equal(2, #rows, H.slurp(d .. "/summary.md"))
    assert.are.same({ "sched", "const" }, { rows[1].kind, rows[2].kind })
    local function losses(name)
      local l = {}
      for v in H.slurp(d .. "/" .. name .. ".train.log"):gmatch("mean loss ([%d.]+)") do l[#l + 1] = v end
      return l
    end
    local a, b = losses("sched_1e-2"), losses("const_1e-2")
    assert.are.equal(2, #a)
    assert.are.equal(a[1], b[1])        -- epoch 1 runs at the same lr
    assert.are_not.equal(a[2], b[2])    -- epoch 2: 1e-2 * 0.1^(1/2) against 1e-2
    assert.truthy(exists(d .. "/const_1e-2/eval.json"))
    os.execute("rm -rf " .. q(d))
  end)

  it("flow_class --no-scheduler: constant lr 1e-3 (the measured compensation) unless --lr is given", function()
    local d = tmpdir()
    local common = { "--no-scheduler", "--subset", "64", "--hidden", "4", "--epochs", "2", "--steps", "2",
      "--sample-epochs", "9" }
    local function run(extra)
      local a = { table.unpack(common) }
      for _, v in ipairs(extra) do a[#a + 1] = v end
      local out, code = run_script("scripts/flow_class.lua", a)
      assert.are.equal(0, code, out)
      return out, ckpt.load(a[#a] .. "/checkpoint.safetensors", { restore_rng = false })
    end
    local out, st = run({ "--out", d .. "/a" })
    assert.truthy(out:find("constant lr 0.001, the measured compensation", 1, true), out)
    assert.are.equal(1e-3, st.meta.lr)
    assert.are.equal("false", st.meta.scheduler)
    out, st = run({ "--lr", "0.01", "--out", d .. "/b" })
    assert.truthy(out:find("constant lr 0.01)", 1, true), out)
    assert.are.equal(1e-2, st.meta.lr)
    os.execute("rm -rf " .. q(d))
  end)

  it("scripts/compare_runs.lua: per-epoch table from the checkpoints' histories, one plot, clear errors", function()
    local d = tmpdir()
    -- two runs as fdm.train stores them: 4 batches per epoch, 3 and 2 epochs
    ckpt.save(d .. "/a.safetensors", { epoch = 3, meta = { lr = 1e-2, scheduler = "true" },
      history = { loss = { 1, 3, 2, 2, 1, 1, 1, 1, .5, .5, .5, .5 }, epoch_loss = { 2, 1, .5 },
                  epoch_time = { 60, 60, 120 } } })
    train.mkdir(d .. "/b")
    ckpt.save(d .. "/b/checkpoint.safetensors", { epoch = 2, meta = { lr = 1e-3, scheduler = "false" },
      history = { loss = { .25, .25, .25, .25, .125, .125, .125, .125 }, epoch_loss = { .25, .125 } } })
    local out, rc = H.sh(q(BIN) .. " scripts/compare_runs.lua --out " .. q(d .. "/c.png") .. " --md "
      .. q(d .. "/c.md") .. " " .. q(d .. "/a.safetensors") .. " " .. q(d .. "/b=my run"))
    assert.are.equal(0, rc, out)
    local md = H.slurp(d .. "/c.md")
    assert.truthy(md:find("| epoch | lr 0.01, ExponentialLR | my run |", 1, true), md)
    assert.truthy(md:find("| 1 | 2.0000 | 0.2500 |", 1, true), md)
    assert.truthy(md:find("| 3 | 0.5000 |  |", 1, true), md)
    assert.truthy(md:find("| minutes | 4.0 |  |", 1, true), md)
    assert.truthy(out:find(md, 1, true))
    assert.truthy(H.slurp(d .. "/c.png"):sub(2, 4) == "PNG")
    out, rc = H.sh(q(BIN) .. " scripts/compare_runs.lua " .. q(d .. "/missing"))
    assert.are.equal(2, rc)
    assert.truthy(out:find("'" .. d .. "/missing", 1, true), out)
    ckpt.save(d .. "/empty.safetensors", { epoch = 0 })
    out, rc = H.sh(q(BIN) .. " scripts/compare_runs.lua " .. q(d .. "/empty.safetensors"))
    assert.are.equal(2, rc)
    assert.truthy(out:find("holds no loss history", 1, true), out)
    out, rc = H.sh(q(BIN) .. " scripts/compare_runs.lua --smooth 0 " .. q(d .. "/b"))
    assert.are.equal(2, rc)
    assert.truthy(out:find("--smooth expects an integer >= 1, got '0'", 1, true), out)
    os.execute("rm -rf " .. q(d))
  end)

  it("an unknown option exits 2 naming the valid ones; --help exits 0", function()
    local out, code = run_script("scripts/flow_time.lua", { "--epoch", "3" })
    assert.are.equal(2, code)
    assert.truthy(out:find("unknown option --epoch", 1, true))
    assert.truthy(out:find("--epochs", 1, true))
    out, code = run_script("scripts/denoiser.lua", { "--help" })
    assert.are.equal(0, code)
    assert.truthy(out:find("--pure-noise", 1, true))
    assert.truthy(out:find("(default: 128)", 1, true))
  end)
end)
