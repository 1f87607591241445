-- Trains the MNIST classifier of fdm.classifier (the scorer of Part B) and
-- saves it as safetensors, with a provenance note next to it.
--
--   ./build/fdm scripts/train_classifier.lua [--epochs 3] [--batch 128] [--lr 2e-3]
--       [--seed 0] [--shift 2 (random translation, pixels; 0: none)] [--n N (train subset)] [--out weights/mnist_classifier.safetensors]
--       [--note weights/mnist_classifier.md | --note none]
--
-- Adam, learning rate with a short linear warmup then cosine decay to 0 over
-- all steps; each training image is translated by a random (dx, dy) in
-- [-shift, shift]^2 (zero fill). Prints images/s and the test accuracy.
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local cls = require "fdm.classifier"
local F = fdm.F

local argv = arg or {}
local opts = cli.parse_or_exit(argv, {
  name = "train_classifier", common = { "epochs", "batch", "lr", "seed" },
  summary = "train the MNIST classifier that scores generators (fdm.classifier)",
  defaults = { epochs = 4, batch = 128, lr = 2e-3, seed = 0 },
  options = {
    { "shift", "int", 2, "random translation of training images, pixels (0: none)", min = 0, max = 13 },
    { "n", "int", nil, "train on the first N training images (default: all)", min = 1 },
    { "out", "string", "weights/mnist_classifier.safetensors", "where the weights go" },
    { "note", "string", nil, "provenance note (default: --out with .md; none: no note)" },
    { "own-loader", "flag", false, "shuffle with this script's gather loader instead of fdm.data's" },
  },
})
if opts.note == nil then opts.note = opts.out:gsub("%.safetensors$", "") .. ".md" end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local s = p:read("a"); p:close()
  s = s and s:gsub("%s+$", "")
  return s ~= "" and s or nil
end

local t_start = fdm.time()
local commit = sh("git rev-parse HEAD") or "unknown"   -- at the start of training
fdm.manual_seed(opts.seed)
local t_load = fdm.time()
local train = cls.mnist("train")
local test = cls.mnist("test")
if opts.n then train = cls.head(train, opts.n) end
io.stderr:write(string.format("data: %d train, %d test images (%.1f s)\n", train.n, test.n, fdm.time() - t_load))

local net = cls.new()
net:train()
print(string.format("MnistClassifier: %d parameters", net:num_parameters()))
local opt = fdm.optim.Adam(net:parameters(), { lr = opts.lr })

-- batches: fdm.data's loader when present, else a gather-shuffled epoch
local data_ok, data = pcall(require, "fdm.data")
local function epoch_batches(ds, batch)
  if data_ok and type(data) == "table" and data.loader and not opts.own_loader then
    local ok, loader = pcall(data.loader, ds, { batch = batch, shuffle = true })
    if ok and loader then return loader:epoch() end
  end
  local n = ds.n
  local perm = fdm.randperm(n)
  local flat = ds.images:reshape(n, 784)
  local xs = fdm.gather(flat, 1, perm:view(n, 1):expand(n, 784)):view(n, 1, 28, 28)
  local ys = fdm.gather(ds.labels:float(), 1, perm):long()
  local s, k = 1, 0
  return function()
    if s > n then return nil end
    local len = math.min(batch, n - s + 1)
    local x, y = xs:narrow(1, s, len), ys:narrow(1, s, len)
    s = s + len; k = k + 1
    return x, y, k
  end
end

-- per-sample random translation by up to `shift` pixels: pad with zeros,
-- then gather each image's 28x28 window at its own offset
local grid28 = (fdm.arange(28):view(28, 1) * (28 + 2 * opts.shift) + fdm.arange(28):view(1, 28)):view(1, 784)
local function augment(x)
  local s = opts.shift
  if s <= 0 then return x end
  local b, w = x.shape[1], 28 + 2 * s
  local flat = fdm.pad(x, { s, s, s, s }):reshape(b, w * w)
  local idx = fdm.randint(0, 2 * s + 1, { b, 1 }) * w + fdm.randint(0, 2 * s + 1, { b, 1 }) + grid28
  return fdm.gather(flat, 2, idx):view(b, 1, 28, 28)
end

local steps_per_epoch = math.ceil(train.n / opts.batch)
local total_steps = steps_per_epoch * opts.epochs
local warmup = math.min(100, total_steps // 10)
local function lr_at(step)  -- step counts from 0
  if step < warmup then return opts.lr * (step + 1) / warmup end
  local p = (step - warmup) / math.max(1, total_steps - warmup)
  return opts.lr * 0.5 * (1 + math.cos(math.pi * p))
end

local step = 0
local train_s = 0.0   -- training time only (the per-epoch test passes excluded)
local seen = 0
local final_loss
local losses = {}
for ep = 1, opts.epochs do
  local bar = fdm.progress.bar { total = steps_per_epoch, desc = string.format("epoch %d/%d", ep, opts.epochs) }
  local ep_loss, ep_n, ep_correct = 0.0, 0, 0
  local t_ep = fdm.time()
  for x, y in epoch_batches(train, opts.batch) do
    for _, g in ipairs(opt.param_groups) do g.lr = lr_at(step) end
    local logits = net(augment(x))
    local loss = F.cross_entropy(logits, y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    step = step + 1
    local b = x.shape[1]
    local l = loss:item()
    ep_loss, ep_n = ep_loss + l * b, ep_n + b
    ep_correct = ep_correct + fdm.eq(logits:detach():argmax(2), y):long():sum():item()
    seen = seen + b
    losses[#losses + 1] = l
    bar:update(1, { loss = string.format("%.4f", l), ["img/s"] = string.format("%.0f", ep_n / (fdm.time() - t_ep)) })
  end
  bar:close()
  local ep_s = fdm.time() - t_ep
  train_s = train_s + ep_s
  final_loss = ep_loss / ep_n
  local acc = cls.accuracy(net, test.images, test.labels)
  print(string.format("epoch %d: train loss %.4f, train acc %.4f, test acc %.4f, %.0f images/s",
    ep, final_loss, ep_correct / ep_n, acc, ep_n / ep_s))
end
local ips = seen / train_s

net:eval()
local t_eval = fdm.time()
local acc, per = cls.accuracy(net, test.images, test.labels)
local eval_s = fdm.time() - t_eval
print(string.format("training: %d steps, %.1f s, %.0f images/s; final epoch loss %.4f", step, train_s, ips, final_loss))
print(string.format("test accuracy: %.4f (%d images, %.0f images/s inference)", acc, test.n, test.n / eval_s))
local parts = {}
for d = 1, 10 do parts[d] = string.format("%d:%.4f", per[d].digit, per[d].acc) end
print("per digit: " .. table.concat(parts, " "))

local date = os.date("!%Y-%m-%dT%H:%M:%SZ")
local cmd = (os.getenv("OMP_NUM_THREADS") and ("OMP_NUM_THREADS=" .. os.getenv("OMP_NUM_THREADS") .. " ") or "")
  .. "./build/fdm scripts/train_classifier.lua " .. table.concat(argv, " ")
local meta = {
  format = "pt", model = "MnistClassifier", features = tostring(cls.NUM_FEATURES),
  epochs = tostring(opts.epochs), batch = tostring(opts.batch), lr = tostring(opts.lr),
  seed = tostring(opts.seed), test_accuracy = string.format("%.4f", acc),
  final_loss = string.format("%.5f", final_loss), commit = commit, date = date,
}
cls.save(net, opts.out, meta)
print("saved " .. opts.out)

if opts.note ~= "none" then
  local f = assert(io.open(opts.note, "w"))
  local cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2") or "?"
  f:write("# MNIST classifier (fdm.classifier) - provenance\n\n")
  f:write("Scorer of Part B (Quality): accuracy of generated digits and the Fréchet\n")
  f:write("distance of its 128-d penultimate features (`lua/fdm/classifier.lua`).\n\n")
  f:write("| field | value |\n|---|---|\n")
  f:write(string.format("| weights | `%s` (%d parameters, float32) |\n", opts.out, net:num_parameters()))
  f:write(string.format("| command | `%s` |\n", cmd))
  f:write(string.format("| commit | `%s` (`git rev-parse HEAD` at training time; the classifier files were uncommitted) |\n", commit))
  f:write(string.format("| date | %s |\n", date))
  f:write(string.format("| data | MNIST train %d images, test %d images, pixels in [0,1], random translation by up to %d px |\n", train.n, test.n, opts.shift))
  f:write(string.format("| optimiser | Adam lr %g, %d warmup steps then cosine to 0, batch %d, seed %d |\n",
    opts.lr, warmup, opts.batch, opts.seed))
  f:write(string.format("| epochs | %d (%d steps) |\n", opts.epochs, step))
  f:write(string.format("| final loss | %.4f (mean train cross-entropy of the last epoch, dropout on) |\n", final_loss))
  f:write(string.format("| test accuracy | %.4f (%d / %d) |\n", acc, math.floor(acc * test.n + 0.5), test.n))
  f:write(string.format("| per digit | %s |\n", table.concat(parts, " ")))
  f:write(string.format("| wall time | %.1f s training (%.0f images/s), %.1f s test pass, %.1f s whole script |\n",
    train_s, ips, eval_s, fdm.time() - t_start))
  f:write(string.format("| machine | %s, OMP_NUM_THREADS=%s, CPU only (shared with other jobs) |\n",
    cpu:gsub("^%s+", ""), os.getenv("OMP_NUM_THREADS") or "default"))
  f:close()
  print("wrote " .. opts.note)
end
