-- fdm.train: the small training-loop driver shared by the Part B scripts.
--
--   local train = require "fdm.train"
--   local ds = train.load_data(args, "train")      -- fdm.data (subset, dataset from args)
--   local run = train.run {
--     args = args,                  -- parsed fdm.cli options: epochs, resume, out, seed, device, max_batches
--     name = "flow_time",
--     model = net, optimizer = opt, scheduler = sched,   -- scheduler optional, stepped once per epoch
--     loader = data.loader(ds, {batch = args.batch, shuffle = true}),
--     loss = function(x, y, i) return flow.time_loss(net, x) end,   -- a scalar tensor
--     after_epoch = function(epoch, run) ... end,   -- pictures; the RNG state is put back after it
--     meta = { hidden = 64, ... },  -- stored in the checkpoint; must match on --resume
--     full_images = 60000,          -- images per epoch of the full recipe (for the projection)
--     print = print, quiet = false, -- log function; quiet hides the progress bar
--     graph_emulate = false,        -- tests: --graph without a capture (fdm.graph's emulate)
--   }
--   --autocast bf16 (train.AUTOCAST, in train.OPTIONS) runs cfg.loss under
--   fdm.autocast("bfloat16"): convolutions and matmuls on bfloat16 operands,
--   float32 master weights and gradients; recorded as meta.autocast.
--   run.history.loss (per batch), run.history.epoch_loss, run.history.epoch_time,
--   run.history.images_per_s, run.epoch, run.out, run.checkpoint, run.model_file
--
-- Every epoch: a progress bar (loss, images/s, ETA), then a line with the
-- mean loss, the time of the epoch, images/s and the projected time of the
-- full recipe (epochs * full_images / images/s); the loss curve
-- (OUT/loss.png, log scale); the checkpoint OUT/checkpoint.safetensors
-- (model, optimizer, scheduler, RNG, epoch, loss history; written
-- atomically). At the end the weights alone go to OUT/model.safetensors.
-- --graph (CUDA): the step is captured once and replayed (fdm.graph_step);
-- the same numbers as without, the losses read every 50 steps.
-- --resume loads the checkpoint and continues with the next epoch: the
-- same weights, optimizer moments, learning rate, RNG stream and loss
-- history as a run that never stopped.
local fdm = require "fdm"
local cli = require "fdm.cli"
local ckpt = require "fdm.checkpoint"
local flow = require "fdm.flow"

local train = {}

-- the options of fdm.cli.COMMON that fdm.train itself reads (train.run,
-- train.load_data); scripts add the others they read (steps, cfg, ...)
train.COMMON = { "epochs", "batch", "lr", "hidden", "seed", "subset", "dataset", "device", "resume", "out" }

-- --autocast: its own entry so scripts with their own loop (train_ddpm) add it too
train.AUTOCAST = { "autocast", "choice", "off",
  "bf16: convolutions and matmuls on bfloat16 operands, float32 accumulation and master weights",
  choices = { "off", "bf16" } }

-- options the training scripts add to fdm.cli's common ones
train.OPTIONS = {
  { "max-batches", "int", 0, "stop each epoch after N batches (0 = all; for timing)", min = 0 },
  { "sample-seed", "int", 1234, "seed of the noise used for the pictures (same after every epoch)" },
  { "stop-after", "int", 0, "stop after this epoch (0 = run all; continue later with --resume)", min = 0 },
  train.AUTOCAST,
  { "graph", "flag", false, "CUDA graphs: capture one training step and replay it (--device cuda)" },
}

-- fn(...) under the autocast --autocast asks for (args.autocast: "off", "bf16" or nil)
function train.autocast(args, fn, ...)
  if args.autocast == nil or args.autocast == "off" then return fn(...) end
  return fdm.autocast("bfloat16", fn, ...)
end

function train.mkdir(path)
  local ok = os.execute("mkdir -p '" .. path:gsub("'", "'\\''") .. "'")
  if not ok then error("cannot create directory " .. path) end
  return path
end

---------------------------------------------------------------- data
-- Synthetic stand-in (FDM_FAKE_DATA=1, for tests on machines without the
-- data files): class k is a bright bar at an angle of k * 18 degrees plus
-- noise, float32 [N,1,28,28] in [0,1], labels int64 [N].
function train.fake_dataset(n, seed)
  return flow.with_rng(seed or 7, function()
    local labels = fdm.randint(0, 10, { n })
    local ys = fdm.arange(28):float():reshape(1, 1, 28, 1) - 13.5
    local xs = fdm.arange(28):float():reshape(1, 1, 1, 28) - 13.5
    local ang = labels:float():reshape(n, 1, 1, 1) * (math.pi / 10)
    local d = (xs * ang:sin() - ys * ang:cos()):abs()
    local r = (xs * xs + ys * ys):sqrt()
    local img = fdm.clamp(2.5 - d, 0, 1) * fdm.lt(r, 11):float()
    img = fdm.clamp(img + fdm.rand(n, 1, 28, 28) * 0.1, 0, 1)
    return { images = img:contiguous(), labels = labels, n = n, fake = true }
  end)
end

local function fake_loader(ds, opts)
  local L = { ds = ds, batch = opts.batch, shuffle = opts.shuffle }
  local nb = (ds.n + opts.batch - 1) // opts.batch
  function L:epoch()
    local perm = self.shuffle and fdm.randperm(ds.n) or fdm.arange(ds.n):long()
    local i = 0
    return function()
      i = i + 1
      if i > nb then return nil end
      local s = (i - 1) * self.batch
      local len = math.min(self.batch, ds.n - s)
      local idx = perm:narrow(1, s + 1, len)
      local xs, ys = {}, {}
      for k, v in ipairs(idx:tolist()) do xs[k] = ds.images[v + 1]; ys[k] = ds.labels[v + 1] end
      return fdm.stack(xs, 1), fdm.stack(ys, 1), i
    end
  end
  return setmetatable(L, { __len = function() return nb end })
end

local function use_fake() return os.getenv("FDM_FAKE_DATA") == "1" end

-- args.dataset, args.subset; split "train" | "test"
function train.load_data(args, split)
  if use_fake() then
    local n = split == "test" and 512 or 2048
    local ds = train.fake_dataset(n, split == "test" and 8 or 7)
    if split ~= "test" and args.subset and args.subset > 0 and args.subset < ds.n then
      ds = train.fake_dataset(args.subset, 7)
    end
    return ds
  end
  local data = require "fdm.data"
  local ds = data.load(args.dataset or "mnist", split)
  if split ~= "test" and args.subset and args.subset > 0 and args.subset < ds.n then
    ds = data.subset(ds, args.subset)
  end
  return ds
end

function train.loader(ds, opts)
  if ds.fake then return fake_loader(ds, opts) end
  return require("fdm.data").loader(ds, opts)
end

---------------------------------------------------------------- helpers
function train.fmt_time(s)
  if s >= 3600 then return string.format("%.1f h", s / 3600) end
  if s >= 60 then return string.format("%.1f min", s / 60) end
  return string.format("%.1f s", s)
end

-- epochs after which a script shows pictures: the list given, else {1, E/2, E}
-- (flow: 1, 5, 10) or {1, E} (two = true: the denoiser's 1 and 5)
function train.milestones(epochs, given, two)
  local set, out = {}, {}
  local list = (given and #given > 0) and given or (two and { 1, epochs } or { 1, epochs // 2, epochs })
  for _, e in ipairs(list) do
    if e >= 1 and e <= epochs and not set[e] then set[e] = true; out[#out + 1] = e end
  end
  table.sort(out)
  return out, set
end

-- mean of the last k values, a smoothed curve for the loss plot
function train.running_mean(y, k)
  local out, s = {}, 0
  for i, v in ipairs(y) do
    s = s + v
    if i > k then s = s - y[i - k] end
    out[i] = s / math.min(i, k)
  end
  return out
end

-- out/<script>/samples.png: the first `per_row` saved samples of every
-- milestone epoch (OUT/samples_epochNN.safetensors), one row per epoch
function train.samples_overview(out, milestones, per_row, grid_opts)
  local imgs, rows = {}, {}
  for _, e in ipairs(milestones) do
    local file = string.format("%s/samples_epoch%02d.safetensors", out, e)
    local f = io.open(file, "rb")
    if f then
      f:close()
      local t = fdm.io.load_safetensors(file).samples
      for i = 1, math.min(per_row, t.shape[1]) do imgs[#imgs + 1] = t[i] end
      rows[#rows + 1] = "epoch " .. e
    end
  end
  if #imgs == 0 then return nil end
  local o = { nrow = per_row, row_captions = rows }
  for k, v in pairs(grid_opts or {}) do o[k] = v end
  local path = out .. "/samples.png"
  fdm.io.save_grid(path, imgs, o)
  print("wrote " .. path)
  return path
end

function train.plot_loss(path, losses, title, steps_per_epoch)
  if #losses < 1 then return end
  local x = {}
  for i = 1, #losses do x[i] = i end
  local series = { { name = "loss per batch", x = x, y = losses } }
  if #losses >= 20 then
    local k = math.max(5, math.min(100, #losses // 20))
    series[2] = { name = "mean of last " .. k, x = x, y = train.running_mean(losses, k) }
  end
  fdm.io.plot_curves(path, series, {
    logy = true, title = title,
    xlabel = steps_per_epoch and string.format("batch (%d per epoch)", steps_per_epoch) or "batch",
    ylabel = "MSE loss (log scale)" })
end

-- --resume with other settings than the checkpoint's is a usage error
function train.check_meta(saved, want, path)
  local diffs = {}
  for k, v in pairs(want or {}) do
    if saved[k] ~= nil and tostring(saved[k]) ~= tostring(v) then
      diffs[#diffs + 1] = string.format("%s: checkpoint %s, now %s", k, tostring(saved[k]), tostring(v))
    end
  end
  if #diffs > 0 then
    table.sort(diffs)
    cli.usage_error("--resume: " .. path .. " was made with other settings (" .. table.concat(diffs, "; ") ..
      "); use the same options or another --out")
  end
end

---------------------------------------------------------------- the loop
function train.run(cfg)
  local args = cfg.args
  local out = cfg.out or args.out or ("out/" .. cfg.name)
  require("fdm.runfolder").acquire(out)
  local model, opt, sched = cfg.model, cfg.optimizer, cfg.scheduler
  local log = cfg.print or print
  local run = {
    out = out, name = cfg.name,
    checkpoint = out .. "/checkpoint.safetensors",
    model_file = out .. "/model.safetensors",
    loss_png = out .. "/loss.png",
    history = { loss = {}, epoch_loss = {}, epoch_time = {}, images_per_s = {} },
    epoch = 0,
  }
  local meta = cfg.meta or {}
  meta.script = meta.script or cfg.name
  meta.autocast = meta.autocast or args.autocast
  if args.resume then
    if not ckpt.exists(run.checkpoint) then
      cli.usage_error("--resume: no checkpoint at " .. run.checkpoint .. " (run without --resume to start)")
    end
    train.check_meta(ckpt.read_meta(run.checkpoint), meta, run.checkpoint)
    local st = ckpt.load(run.checkpoint, { model = model, optimizer = opt, scheduler = sched })
    run.epoch = st.epoch or 0
    for k, v in pairs(st.history) do run.history[k] = v end
    log(string.format("resumed from %s after epoch %d (%d batches of loss history)",
      run.checkpoint, run.epoch, #run.history.loss))
  end
  local epochs = args.epochs
  local loader = cfg.loader
  local nb = #loader
  if args.max_batches and args.max_batches > 0 then nb = math.min(nb, args.max_batches) end
  local full = cfg.full_images or 60000
  if run.epoch >= epochs then
    log(string.format("%s: already trained for %d epochs (--epochs %d); nothing to do", cfg.name, run.epoch, epochs))
  end
  local last = epochs
  local stop = cfg.stop_after or args.stop_after
  if stop and stop > 0 and stop < epochs then last = stop end
  local device = args.device or "cpu"
  local graph = args.graph and { device = device, emulate = cfg.graph_emulate } or nil
  if graph and not graph.emulate and not fdm.graph_supported({ device = device }) then
    cli.usage_error("--graph: CUDA graphs need --device cuda; device '" .. device .. "' has none")
  end
  -- the loss under --autocast (the backward follows what each op recorded)
  local function loss_fn(x, y, i) return train.autocast(args, cfg.loss, x, y, i) end
  local stepper = require("fdm.graph_step").new(loss_fn, opt, device, graph)
  for epoch = run.epoch + 1, last do
    model:train()
    local bar = fdm.progress.bar { total = nb, desc = string.format("epoch %d/%d", epoch, epochs),
                                   disable = cfg.quiet }
    local t0 = fdm.time()
    local sum, count, images, shown = 0, 0, 0, nil
    local function add_losses(list)
      for _, l in ipairs(list) do
        run.history.loss[#run.history.loss + 1] = l
        sum, shown = sum + l, l
      end
    end
    for x, y, i in loader:epoch() do
      if count >= nb then break end
      local loss = stepper:step(x, y, i)
      add_losses(graph and stepper:take() or { loss:item() })
      count, images = count + 1, images + x.shape[1]
      local el = fdm.time() - t0
      bar:update(1, { loss = shown and string.format("%.4g", shown) or "-",
                      ["img/s"] = string.format("%.0f", images / math.max(el, 1e-9)) })
    end
    if graph then add_losses(stepper:flush()) end
    bar:close()
    local dt = fdm.time() - t0
    if sched then sched:step() end
    local rate = images / math.max(dt, 1e-9)
    local h = run.history
    h.epoch_loss[#h.epoch_loss + 1] = sum / math.max(count, 1)
    h.epoch_time[#h.epoch_time + 1] = dt
    h.images_per_s[#h.images_per_s + 1] = rate
    run.epoch = epoch
    run.rate = rate
    local lr = opt.param_groups[1].lr
    log(string.format("epoch %d/%d: mean loss %.5g, %s for %d images (%.1f images/s, %.3f s/batch), next lr %.4g",
      epoch, epochs, h.epoch_loss[#h.epoch_loss], train.fmt_time(dt), images, rate, dt / math.max(count, 1), lr))
    -- the projection is at the speed of the configuration that ran; a smaller
    -- model or another batch than the recipe's says so instead of passing for it
    local given = args.given or {}
    local own = (given.hidden or given.batch) and
      string.format(" (D=%s, batch %s: not the recipe's sizes, whose speed differs)", tostring(args.hidden),
        tostring(args.batch)) or ""
    log(string.format("  projected at this speed%s: %d epochs x %d images / %.1f images/s = %s",
      own, epochs, full, rate, train.fmt_time(epochs * full / rate)))
    ckpt.save(run.checkpoint, {
      model = model, optimizer = opt, scheduler = sched, epoch = epoch,
      history = run.history, meta = meta,
    })
    train.plot_loss(run.loss_png, run.history.loss,
      string.format("%s: training loss (epochs 1-%d)", cfg.name, epoch), #loader)
    log("  wrote " .. run.checkpoint .. " and " .. run.loss_png)
    if cfg.after_epoch then
      local rng = fdm.get_rng_state()
      local ok, err = pcall(cfg.after_epoch, epoch, run)
      fdm.set_rng_state(rng)
      model:train()
      if not ok then error(err, 0) end
    end
  end
  stepper:free()
  if run.epoch < epochs then
    log(string.format("%s: stopped after epoch %d of %d; continue with --resume", cfg.name, run.epoch, epochs))
    run.stopped = true
    return run
  end
  ckpt.save_model(run.model_file, model, meta)
  log("wrote " .. run.model_file .. " (final weights)")
  return run
end

return train
