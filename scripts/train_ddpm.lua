-- Trains the shipped Part A model: a class-conditioned epsilon-prediction DDPM
-- on MNIST (fdm.ddpm_model: the Part B ClassConditionalUNet, time input t/T,
-- DeepFloyd IF's cosine schedule squaredcos_cap_v2 with T = 1000), class
-- dropout 0.1 for classifier-free guidance.
--
--   ./build/fdm scripts/train_ddpm.lua                      # the real run (defaults below)
--   ./build/fdm scripts/train_ddpm.lua --subset 512 --hidden 8 --epochs 1   # smoke run
--   ./build/fdm scripts/train_ddpm.lua --resume             # continue OUT/checkpoint.safetensors
--
-- Writes, in --out (default out/train_ddpm): checkpoint.safetensors (model,
-- Adam state, epoch, loss history, RNG; every epoch), ema.safetensors (the EMA
-- weights, every epoch), loss.png (loss curve, log scale), samples_epochK.png
-- (one CFG sample per digit after each epoch). The final (EMA) weights go to
-- --weights: weights/ddpm_mnist.safetensors for a full run; a run with --out
-- or --subset writes OUT/ddpm_mnist.safetensors instead, so smoke runs never
-- replace the shipped weights unless --weights says so.
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local ckpt = require "fdm.checkpoint"
local train_lib = require "fdm.train"
local M = require "fdm.ddpm_model"
local D = require "fdm.diffusion"

local spec = {
  name = "train_ddpm",
  script = "scripts/train_ddpm.lua",
  summary = "train the class-conditioned MNIST DDPM of Part A (cosine schedule, T = 1000, class dropout for CFG)",
  defaults = { epochs = 20, batch = 128, lr = 1e-3, hidden = 64, steps = 34, cfg = 5 },
  options = {
    { "weights", "string", nil, "final weights (default weights/ddpm_mnist.safetensors, OUT/ddpm_mnist.safetensors with --out/--subset)" },
    { "p-uncond", "number", 0.1, "probability of dropping the class (CFG training)", min = 0, max = 1 },
    { "ema", "number", 0.999, "EMA decay of the saved weights (0 = no EMA)", min = 0, max = 1 },
    { "warmup", "int", 200, "linear learning-rate warmup steps (then cosine decay to lr/20)", min = 0 },
    { "schedule", "choice", "cosine", "beta schedule", choices = { "cosine", "linear" } },
    { "samples", "flag", true, "save a CFG sample grid after every epoch (--samples=false to skip)" },
    train_lib.AUTOCAST,
    { "graph", "flag", false, "CUDA graphs: capture one training step (and one sampler step) and replay it (--device cuda)" },
  },
}
local args = cli.parse_or_exit(arg, spec)
if args.graph and not fdm.graph_supported({ device = args.device }) then
  cli.usage_error("--graph: CUDA graphs need --device cuda; device '" .. args.device .. "' has none")
end
local OUT = args.out
local WEIGHTS = args.weights
if WEIGHTS == nil then
  if args.given.out or args.subset > 0 then WEIGHTS = OUT .. "/ddpm_mnist.safetensors"
  else WEIGHTS = M.DEFAULT_WEIGHTS end
end
require("fdm.runfolder").acquire(OUT)   -- creates OUT, locks it, removes a killed run's temporaries
local dir = WEIGHTS:match("^(.*)/[^/]*$")
if dir then os.execute("mkdir -p '" .. dir .. "'") end

fdm.manual_seed(args.seed)

---------------------------------------------------------------- data
local function load_mnist(split)
  local ok, data = pcall(require, "fdm.data")
  if ok and type(data) == "table" and data.load then
    local ok2, ds = pcall(data.load, args.dataset, split)
    if ok2 and ds then return ds, data end
  end
  return require("fdm.classifier").mnist(split), nil
end
local t_load = fdm.time()
local train, data = load_mnist("train")
train.n = train.n or train.images.shape[1]
if args.subset > 0 and args.subset < train.n then
  train = { images = train.images:narrow(1, 1, args.subset), labels = train.labels:narrow(1, 1, args.subset), n = args.subset }
end
io.stderr:write(string.format("data: %d training images (%.1f s)\n", train.n, fdm.time() - t_load))

local function epoch_batches(ds, batch)
  if data and data.loader then
    local ok, loader = pcall(data.loader, ds, { batch = batch, shuffle = true })
    if ok and loader then return loader:epoch() end
  end
  local n = ds.n
  local perm = fdm.randperm(n)
  local flat = ds.images:reshape(n, 784)
  local xs = fdm.gather(flat, 1, perm:view(n, 1):expand(n, 784)):view(n, 1, 28, 28)
  local ys = fdm.gather(ds.labels, 1, perm)
  local s = 1
  return function()
    if s > n then return nil end
    local len = math.min(batch, n - s + 1)
    local x, y = xs:narrow(1, s, len), ys:narrow(1, s, len)
    s = s + len
    return x, y
  end
end

---------------------------------------------------------------- model, optimizer
local model = M.new { hidden = args.hidden, schedule_kind = args.schedule, device = args.device }
local net = model.net
net:train()
local opt = fdm.optim.Adam(net:parameters(), { lr = args.lr })
local ema = args.ema > 0 and fdm.optim.EMA(net, args.ema, { warmup = true }) or nil
print(string.format("DDPM: ClassConditionalUNet D=%d, %d parameters, %s schedule T=%d, p_uncond %.2f",
  args.hidden, net:num_parameters(), args.schedule, model.T, args.p_uncond))

local steps_per_epoch = math.ceil(train.n / args.batch)
local total_steps = steps_per_epoch * args.epochs
local warmup = math.min(args.warmup, math.max(1, total_steps // 10))
local function lr_at(step) -- step from 0
  if step < warmup then return args.lr * (step + 1) / warmup end
  local p = math.min(1, (step - warmup) / math.max(1, total_steps - warmup))
  local lo = args.lr / 20
  return lo + (args.lr - lo) * 0.5 * (1 + math.cos(math.pi * p))
end

local CKPT, EMA_PATH = OUT .. "/checkpoint.safetensors", OUT .. "/ema.safetensors"
-- stored in the checkpoint; --resume must be given the same
local META = { script = "train_ddpm", hidden = args.hidden, schedule = args.schedule, T = model.T,
  p_uncond = args.p_uncond, ema = args.ema, lr = args.lr, batch = args.batch, seed = args.seed,
  autocast = args.autocast }
local history = { loss = {}, epoch_loss = {} }
local start_epoch = 1
if args.resume then
  if not ckpt.exists(CKPT) then cli.usage_error("train_ddpm: --resume but no " .. CKPT .. " (run without --resume to start)") end
  train_lib.check_meta(ckpt.read_meta(CKPT), META, CKPT)
  local st = ckpt.load(CKPT, { model = net, optimizer = opt })
  history.loss = st.history.loss or {}
  history.epoch_loss = st.history.epoch_loss or {}
  start_epoch = (st.epoch or 0) + 1
  if ema and ckpt.exists(EMA_PATH) then
    local t, meta = fdm.io.load_safetensors(EMA_PATH)
    for k, v in pairs(t) do if ema.shadow[k] then ema.shadow[k]:copy_(v) end end
    ema.num_updates = tonumber(meta.num_updates) or 0
  end
  print(string.format("resumed from %s after epoch %d", CKPT, start_epoch - 1))
end

local function save_ema()
  if not ema then return end
  local t = {}
  for k, v in pairs(ema.shadow) do t[k] = v:to("cpu"):contiguous() end
  fdm.io.save_safetensors(EMA_PATH, t, { num_updates = tostring(ema.num_updates), decay = tostring(ema.decay) })
end

-- the weights to sample from / to ship: the EMA average when there is one
local function with_final_weights(fn)
  if not ema then return fn() end
  ema:store(net)
  ema:copy_to(net)
  local ok, err = pcall(fn)
  ema:restore(net)
  if not ok then error(err, 0) end
end

local function sample_grid(path)
  with_final_weights(function()
    net:eval()
    local saved = fdm.get_rng_state()
    fdm.manual_seed(1234)
    local x = fdm.no_grad(function()
      local c = fdm.F.one_hot(fdm.arange(0, 10), 10):float()
      if args.device ~= "cpu" then c = c:to(args.device) end
      return D.sample(model, 10, { cond = c, uncond = fdm.zeros(1, 10, { device = args.device }),
        cfg = args.cfg, steps = math.min(args.steps, 34), graph = args.graph })
    end)
    fdm.set_rng_state(saved)
    net:train()
    local caps = {}
    for d = 0, 9 do caps[#caps + 1] = tostring(d) end
    fdm.io.save_grid(path, M.from_model(x):to("cpu"), { nrow = 10, scale = 3, captions = caps,
      title = string.format("DDPM samples, CFG %g, %d steps", args.cfg, math.min(args.steps, 34)) })
  end)
end

---------------------------------------------------------------- training
local step = (start_epoch - 1) * steps_per_epoch
local t0 = fdm.time()
-- the step, eager or (--graph) captured once and replayed (fdm.graph_step);
-- with --graph the losses are read every 50 steps
local stepper = require("fdm.graph_step").new(function(x, y)
  return train_lib.autocast(args, M.loss, model, x, y, { p_uncond = args.p_uncond })
end, opt, args.device, args.graph and { device = args.device } or nil)
for ep = start_epoch, args.epochs do
  local bar = fdm.progress.bar { total = steps_per_epoch, desc = string.format("epoch %d/%d", ep, args.epochs) }
  local sum, cnt, t_ep = 0.0, 0, fdm.time()
  local sizes, shown = {}, nil   -- batch sizes of the steps whose loss is not read yet
  local function add_losses(list)
    for _, l in ipairs(list) do
      history.loss[#history.loss + 1] = l
      sum, cnt, shown = sum + l * sizes[1], cnt + sizes[1], l
      table.remove(sizes, 1)
    end
  end
  for x, y in epoch_batches(train, args.batch) do
    for _, g in ipairs(opt.param_groups) do g.lr = lr_at(step) end
    local loss = stepper:step(x, y)
    if ema then ema:update(net) end
    step = step + 1
    sizes[#sizes + 1] = x.shape[1]
    add_losses(args.graph and stepper:take() or { loss:item() })
    bar:update(1, { loss = shown and string.format("%.4f", shown) or "-", lr = string.format("%.2e", lr_at(step - 1)) })
  end
  if args.graph then add_losses(stepper:flush()) end
  bar:close()
  history.epoch_loss[#history.epoch_loss + 1] = sum / cnt
  print(string.format("epoch %d: mean loss %.5f, %.1f s (%.0f images/s)", ep, sum / cnt,
    fdm.time() - t_ep, cnt / (fdm.time() - t_ep)))
  ckpt.save(CKPT, { model = net, optimizer = opt, epoch = ep, history = history,
    meta = META })
  save_ema()
  fdm.io.plot_curves(OUT .. "/loss.png", { { name = "training loss (per step)", y = history.loss } },
    { logy = true, title = "DDPM epsilon-prediction loss", xlabel = "step", ylabel = "MSE" })
  print("checkpoint: " .. CKPT .. ", loss curve: " .. OUT .. "/loss.png")
  if args.samples then
    local p = string.format("%s/samples_epoch%d.png", OUT, ep)
    sample_grid(p)
    print("samples: " .. p)
  end
end

stepper:free()
local final = history.epoch_loss[#history.epoch_loss]
with_final_weights(function()
  M.save(model, WEIGHTS, { epochs = args.epochs, batch = args.batch, lr = args.lr, seed = args.seed,
    p_uncond = args.p_uncond, ema = args.ema, subset = args.subset, autocast = args.autocast,
    final_loss = final and string.format("%.5f", final) or "?",
    train_seconds = string.format("%.1f", fdm.time() - t0),
    command = "./build/fdm scripts/train_ddpm.lua " .. table.concat(arg or {}, " ") })
end)
print(string.format("saved %s (D=%d, %s weights, final epoch loss %s)", WEIGHTS, args.hidden,
  ema and "EMA" or "raw", final and string.format("%.5f", final) or "?"))
