-- Scores MNIST generators and denoisers with the shipped classifier
-- (lua/fdm/classifier.lua, weights/mnist_classifier.safetensors):
--   (1) accuracy: the share of samples the classifier reads as the requested
--       digit, overall and per digit (class-conditioned samples);
--   (2) the Fréchet distance between the classifier's 128-d features of the
--       samples and of the MNIST test set (double precision, Jacobi eigen-solver),
--       next to the floor at the same N (N real training digits);
--   (3) a one-step denoiser (Part B 1.2): MSE and PSNR on the MNIST test set
--       at each noise level, against the noisy input's.
--
--   ./build/fdm scripts/eval.lua --samples FILE.safetensors
--       FILE holds `images` float [N,1,28,28] in [0,1] and `labels` int64 [N]
--       (the digit each sample was asked to be)
--   ./build/fdm scripts/eval.lua --model weights/X.safetensors  (its kind from the file)
--       flow_class: N samples (labels 0,1,...,9,0,1,...), CFG Euler sampler [--cfg 5]
--       flow_time: N unconditional samples, Euler sampler; the digits the
--         classifier reads are counted instead of an accuracy
--       denoiser: [--sigmas 0,0.2,...,1] on the first N test images (default all 10,000)
--       [--hidden D] [--steps 300] [--batch 256] [--seed 0] [--device cuda]
--   common: [--n N (default 10000; with --samples: all of the file)]
--       [--classifier weights/mnist_classifier.safetensors] [--ref-n 10000]
--       [--out out/eval_samples.png] [--per 8 (samples per digit in the grid)]
--       [--save FILE (the generated samples, as --samples reads them)]
--       [--json FILE (the results)] [--baseline 0 (skip the real-data FD floor)]
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local cls = require "fdm.classifier"

local o = cli.parse_or_exit(arg, {
  name = "eval", common = false,
  summary = "score MNIST samples (--samples FILE) or a Part B model (--model FILE: flow_class, flow_time, denoiser)",
  options = {
    { "samples", "string", nil, "safetensors file with images [N,1,28,28] in [0,1] and labels [N]" },
    { "model", "string", nil, "Part B weights: flow_class or flow_time (sampled and scored) or denoiser (MSE, PSNR)" },
    { "hidden", "int", nil, "UNet width D of --model (default: from the file)", min = 1 },
    { "cfg", "number", 5, "classifier-free guidance scale of the sampler (flow_class)" },
    { "sigmas", "numbers", { 0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0 }, "noise levels of a denoiser's evaluation", min = 0 },
    { "steps", "int", 300, "Euler steps of the sampler", min = 1 },
    { "batch", "int", 256, "sampling batch size", min = 1 },
    { "seed", "int", 0, "sampling seed" },
    { "device", "choice", "auto", "where the model runs (auto: the GPU when there is one; FDM_DEVICE sets the default)",
      choices = { "auto", "cpu", "cuda" } },
    { "n", "int", nil, "samples to score (default 10000 with --model, all of --samples)", min = 1 },
    { "classifier", "string", nil, "classifier weights (default: the shipped weights/mnist_classifier.safetensors)" },
    { "ref-n", "int", 10000, "MNIST test images of the reference statistics", min = 2 },
    { "out", "string", "out/eval_samples.png", "grid of samples with the classifier's readings (none: no grid)" },
    { "per", "int", 8, "samples per digit in the grid", min = 1 },
    { "save", "string", nil, "also save the generated samples (as --samples reads them)" },
    { "json", "string", nil, "also write the results as JSON" },
    { "baseline", "int", 1, "1: score N real training digits too (the FD floor at this N); 0: skip", min = 0, max = 1 },
  },
})
if not o.samples and not o.model then
  cli.usage_error("eval: give --samples FILE or --model FILE (see --help)")
end
if o.samples and o.model then cli.usage_error("eval: give --samples or --model, not both") end

require("fdm.cli").check_device("eval", o.device)
local t_start = fdm.time()
-- the classifier scores generators (loaded before any sampling, so a bad
-- --classifier is said at once); a denoiser's report does not need it
local net
local function load_classifier() net = cls.load(o.classifier, { what = "eval: --classifier" }) end

---------------------------------------------------------------- the samples
local images, labels, source
if o.samples then
  load_classifier()
  if not require("fdm.weights").exists(o.samples) then cli.usage_error("eval: --samples: no such file '" .. o.samples .. "'") end
  local ok, t = pcall(fdm.io.load_safetensors, o.samples)
  if not ok then
    cli.usage_error("eval: --samples: '" .. o.samples .. "' is not a readable safetensors file (" ..
      tostring(t):gsub("\n.*", "") .. ")")
  end
  images, labels = t.images, t.labels
  if not (images and labels) then
    cli.usage_error("eval: --samples: '" .. o.samples .. "' must hold tensors named `images` and `labels`")
  end
  if images.dtype ~= "float32" then images = images:float() end
  if #images.shape == 3 then images = images:unsqueeze(2) end
  if not (#images.shape == 4 and images.shape[2] == 1 and images.shape[3] == 28 and images.shape[4] == 28) then
    cli.usage_error("eval: --samples: images must be [N,1,28,28], got [" .. table.concat(images.shape, ",") .. "]")
  end
  labels = labels:to("int64"):reshape(labels:numel())
  if labels.shape[1] ~= images.shape[1] then
    cli.usage_error(("eval: --samples: %d images but %d labels"):format(images.shape[1], labels.shape[1]))
  end
  if o.n and o.n < images.shape[1] then
    images, labels = images:narrow(1, 1, o.n), labels:narrow(1, 1, o.n)
  end
  source = o.samples
else
  local N = o.n or 10000
  local model, info = require("fdm.models").load(o.model, { hidden = o.hidden, what = "eval: --model" })
  local D = info.hidden
  if o.device and o.device ~= "cpu" then model:to(o.device) end
  if info.kind == "denoiser" then
    require("fdm.denoiser_eval").report(model, { n = o.n, sigmas = o.sigmas, seed = o.seed, batch = o.batch,
      device = o.device, json = o.json, source = ("%s (UnconditionalUNet D=%d)"):format(o.model, D) })
    os.exit(0)
  end
  load_classifier()
  local ts = fdm.time()
  if info.kind == "flow_time" then
    io.stderr:write(string.format("eval: sampling %d digits from %s (TimeConditionalUNet D=%d), %d steps\n",
      N, o.model, D, o.steps))
    images = cls.sample_flow_time(model, N, { steps = o.steps, batch = o.batch, seed = o.seed })
    source = string.format("%s (flow_time D=%d, %d steps, seed %d)", o.model, D, o.steps, o.seed)
  else
    local lab = {}
    for k = 1, N do lab[k] = (k - 1) % 10 end
    labels = fdm.tensor(lab, { dtype = "int64" })
    io.stderr:write(string.format("eval: sampling %d digits from %s (ClassConditionalUNet D=%d), cfg %g, %d steps\n",
      N, o.model, D, o.cfg, o.steps))
    images = cls.sample_flow_class(model, labels, { cfg = o.cfg, steps = o.steps, batch = o.batch, seed = o.seed })
    source = string.format("%s (flow_class D=%d, cfg %g, %d steps, seed %d)", o.model, D, o.cfg, o.steps, o.seed)
  end
  io.stderr:write(string.format("eval: sampled in %.1f s\n", fdm.time() - ts))
  if o.save then
    fdm.io.save_safetensors(o.save, { images = images:contiguous(), labels = labels },
      { model = o.model, cfg = tostring(o.cfg), steps = tostring(o.steps), seed = tostring(o.seed) })
    io.stderr:write("eval: samples saved to " .. o.save .. "\n")
  end
end
local N = images.shape[1]
local lo, hi = images:min():item(), images:max():item()
if lo < -1e-3 or hi > 1 + 1e-3 then
  io.stderr:write(string.format("eval: warning: images range [%.3f, %.3f], not [0,1]; clamped\n", lo, hi))
  images = images:clamp(0, 1)
end

---------------------------------------------------------------- scoring
local t_score = fdm.time()
local logits, feats = cls.logits_and_features(net, images)
local pred = logits:argmax(2)
-- unconditional samples (flow_time) were asked for no digit: count what the
-- classifier reads instead (a generator that covers every digit reads ~10 % each)
local unconditional = labels == nil
local acc, per
if unconditional then
  local counts = {}
  for _, d in ipairs(pred:tolist()) do counts[d] = (counts[d] or 0) + 1 end
  per = {}
  for d = 0, 9 do per[d + 1] = { digit = d, n = counts[d] or 0 } end
else
  acc, per = cls.score(pred, labels)
end

local test = cls.mnist("test")
local ref = cls.head(test, o.ref_n)
local ref_feats = cls.features(net, ref.images)
local ref_stats = cls.stats(ref_feats)
local fd, parts = cls.frechet(feats, ref_stats)
-- the floor at this N: N real training digits against the same reference
-- (the FD of a finite sample is biased upwards by about tr(S)/N)
local base_fd
if o.baseline ~= 0 then
  local train = cls.mnist("train")
  local nb = math.min(N, train.n)
  if nb >= 2 then base_fd = cls.frechet(cls.features(net, train.images:narrow(1, 1, nb)), ref_stats) end
end
local score_s = fdm.time() - t_score

---------------------------------------------------------------- report
print(string.format("samples: %s, N = %d", source, N))
print(string.format("classifier: %s", o.classifier or cls.default_weights()))
print("")
if unconditional then
  print("read as      n   share")
  print("-------  -----  ------")
  for d = 1, 10 do print(string.format("%7d  %5d  %5.1f%%", per[d].digit, per[d].n, 100 * per[d].n / N)) end
else
  print("digit      n   correct  accuracy")
  print("-----  -----  --------  --------")
  for d = 1, 10 do
    local e = per[d]
    if e.n > 0 then
      print(string.format("%5d  %5d  %8d  %8.2f%%", e.digit, e.n, e.correct, 100 * e.acc))
    else
      print(string.format("%5d  %5d  %8s  %8s", e.digit, 0, "-", "-"))
    end
  end
  print("-----  -----  --------  --------")
  print(string.format("  all  %5d  %8d  %8.2f%%", N, math.floor(acc * N + 0.5), 100 * acc))
end
print("")
print(string.format("Fréchet distance (classifier features, %d-d) to MNIST test (%d images): %.4f",
  feats.shape[2], ref.n, fd))
print(string.format("  = mean term %.4f + covariance term %.4f", parts.mean, parts.trace))
if base_fd then
  print(string.format("  floor at this N: %d real MNIST training digits score %.4f (compare FDs at equal N)",
    math.min(N, 60000), base_fd))
end
print(string.format("(scored in %.1f s; whole run %.1f s)", score_s, fdm.time() - t_start))

if o.out ~= "none" then
  local dir = o.out:match("^(.*)/[^/]*$")
  if dir then os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'") end
  -- unconditional samples: one row per digit the classifier reads
  cls.save_digit_grid(o.out, images, labels or pred, pred, { per = o.per,
    title = unconditional and string.format("N %d (rows: the digit read)   FD %.3f", N, fd)
      or string.format("N %d   acc %.2f%%   FD %.3f", N, 100 * acc, fd) })
  print("grid: " .. o.out)
end

if o.json then
  local f = assert(io.open(o.json .. ".tmp", "w"))
  local pd = {}
  for d = 1, 10 do
    if unconditional then
      pd[d] = string.format('{"digit": %d, "read_as": %d}', per[d].digit, per[d].n)
    else
      pd[d] = string.format('{"digit": %d, "n": %d, "correct": %d, "accuracy": %.6f}',
        per[d].digit, per[d].n, per[d].correct, per[d].n > 0 and per[d].acc or 0)
    end
  end
  f:write(string.format('{"n": %d, "accuracy": %s, "frechet": %.6f, "frechet_mean": %.6f, "frechet_cov": %.6f, "frechet_floor": %s, "ref_n": %d, "per_digit": [%s]}\n',
    N, acc and string.format("%.6f", acc) or "null", fd, parts.mean, parts.trace,
    base_fd and string.format("%.6f", base_fd) or "null", ref.n, table.concat(pd, ", ")))
  f:close()
  assert(os.rename(o.json .. ".tmp", o.json))
end
