-- Scores a generator of MNIST digits with the shipped classifier
-- (lua/fdm/classifier.lua, weights/mnist_classifier.safetensors):
--   (1) accuracy: the share of samples the classifier reads as the requested
--       digit, overall and per digit;
--   (2) the Fréchet distance between the classifier's 128-d features of the
--       samples and of the MNIST test set (double precision, Jacobi eigen-solver).
--
--   ./build/fdm scripts/eval.lua --samples FILE.safetensors
--       FILE holds `images` float [N,1,28,28] in [0,1] and `labels` int64 [N]
--       (the digit each sample was asked to be)
--   ./build/fdm scripts/eval.lua --model weights/X.safetensors (a flow_class model; other kinds are refused)
--       [--hidden D] [--cfg 5] [--steps 300] [--batch 256] [--seed 0] [--device cuda]
--       generates N samples (labels 0,1,...,9,0,1,...) with the CFG Euler sampler
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
  summary = "score MNIST samples (--samples FILE) or a flow_class model (--model FILE) with the shipped classifier",
  options = {
    { "samples", "string", nil, "safetensors file with images [N,1,28,28] in [0,1] and labels [N]" },
    { "model", "string", nil, "flow_class weights to sample from (e.g. weights/flow_class_mnist.safetensors)" },
    { "hidden", "int", nil, "UNet width D of --model (default: from the file)", min = 1 },
    { "cfg", "number", 5, "classifier-free guidance scale of the sampler" },
    { "steps", "int", 300, "Euler steps of the sampler", min = 1 },
    { "batch", "int", 256, "sampling batch size", min = 1 },
    { "seed", "int", 0, "sampling seed" },
    { "device", "choice", "cpu", "where the model runs", choices = { "cpu", "cuda" } },
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

local t_start = fdm.time()
local net = cls.load(o.classifier, { what = "eval: --classifier" })

---------------------------------------------------------------- the samples
local images, labels, source
if o.samples then
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
  local model, _, D = cls.load_flow_class(o.model, { hidden = o.hidden, what = "eval: --model" })
  if o.device and o.device ~= "cpu" then model:to(o.device) end
  local lab = {}
  for k = 1, N do lab[k] = (k - 1) % 10 end
  labels = fdm.tensor(lab, { dtype = "int64" })
  io.stderr:write(string.format("eval: sampling %d digits from %s (ClassConditionalUNet D=%d), cfg %g, %d steps\n",
    N, o.model, D, o.cfg, o.steps))
  local ts = fdm.time()
  images = cls.sample_flow_class(model, labels, { cfg = o.cfg, steps = o.steps, batch = o.batch, seed = o.seed })
  io.stderr:write(string.format("eval: sampled in %.1f s\n", fdm.time() - ts))
  source = string.format("%s (flow_class D=%d, cfg %g, %d steps, seed %d)", o.model, D, o.cfg, o.steps, o.seed)
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
local acc, per = cls.score(pred, labels)

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
  cls.save_digit_grid(o.out, images, labels, pred, { per = o.per,
    title = string.format("N %d   acc %.2f%%   FD %.3f", N, 100 * acc, fd) })
  print("grid: " .. o.out)
end

if o.json then
  local f = assert(io.open(o.json, "w"))
  local pd = {}
  for d = 1, 10 do
    pd[d] = string.format('{"digit": %d, "n": %d, "correct": %d, "accuracy": %.6f}',
      per[d].digit, per[d].n, per[d].correct, per[d].n > 0 and per[d].acc or 0)
  end
  f:write(string.format('{"n": %d, "accuracy": %.6f, "frechet": %.6f, "frechet_mean": %.6f, "frechet_cov": %.6f, "frechet_floor": %s, "ref_n": %d, "per_digit": [%s]}\n',
    N, acc, fd, parts.mean, parts.trace, base_fd and string.format("%.6f", base_fd) or "null", ref.n,
    table.concat(pd, ", ")))
  f:close()
end
