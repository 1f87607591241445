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
--   ./build/fdm scripts/eval.lua --model weights/X.safetensors --kind flow_class
--       [--hidden D] [--cfg 5] [--steps 300] [--batch 256] [--seed 0] [--device cuda]
--       generates N samples (labels 0,1,...,9,0,1,...) with the CFG Euler sampler
--   common: [--n N (default 10000; with --samples: all of the file)]
--       [--classifier weights/mnist_classifier.safetensors] [--ref-n 10000]
--       [--out out/eval_samples.png] [--per 8 (samples per digit in the grid)]
--       [--save FILE (the generated samples, as --samples reads them)]
--       [--json FILE (the results)] [--baseline 0 (skip the real-data FD floor)]
local fdm = rawget(_G, "fdm") or require "fdm"
local cls = require "fdm.classifier"

local USAGE = [==[
usage: fdm scripts/eval.lua (--samples FILE | --model FILE --kind flow_class [--hidden D]
         [--cfg 5] [--steps 300] [--batch 256] [--seed 0] [--device D]) [--n N] [--classifier FILE]
         [--ref-n 10000] [--out out/eval_samples.png] [--per 8] [--save FILE] [--json FILE] [--baseline 0]]==]

local argv = arg or {}
local o = { out = "out/eval_samples.png", per = 8, cfg = 5, steps = 300, batch = 256, seed = 0,
  ["ref-n"] = 10000 }
local i = 1
while i <= #argv do
  local a = argv[i]
  if a == "-h" or a == "--help" then print(USAGE) os.exit(0) end
  local k = a:match("^%-%-([%w%-_]+)$")
  if not k or argv[i + 1] == nil then io.stderr:write("eval: bad argument '" .. a .. "'\n" .. USAGE .. "\n") os.exit(2) end
  o[k] = tonumber(argv[i + 1]) or argv[i + 1]
  i = i + 2
end
if not o.samples and not o.model then
  io.stderr:write("eval: give --samples FILE or --model FILE --kind flow_class\n" .. USAGE .. "\n")
  os.exit(2)
end

require("fdm.cli").check_device("eval", o.device)
local t_start = fdm.time()
local net = cls.load(o.classifier)

---------------------------------------------------------------- the samples
local images, labels, source
if o.samples then
  local t = fdm.io.load_safetensors(o.samples)
  images, labels = t.images, t.labels
  assert(images and labels, "eval: '" .. o.samples .. "' must hold `images` and `labels`")
  if images.dtype ~= "float32" then images = images:float() end
  if #images.shape == 3 then images = images:unsqueeze(2) end
  assert(#images.shape == 4 and images.shape[2] == 1 and images.shape[3] == 28 and images.shape[4] == 28,
    "eval: images must be [N,1,28,28], got [" .. table.concat(images.shape, ",") .. "]")
  labels = labels:to("int64"):reshape(labels:numel())
  assert(labels.shape[1] == images.shape[1], "eval: images and labels differ in N")
  if o.n and o.n < images.shape[1] then
    images, labels = images:narrow(1, 1, o.n), labels:narrow(1, 1, o.n)
  end
  source = o.samples
else
  local kind = o.kind or "flow_class"
  if kind ~= "flow_class" then error("eval: --kind " .. kind .. " is not supported (flow_class)") end
  local N = o.n or 10000
  local model, _, D = cls.load_flow_class(o.model, { hidden = o.hidden })
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
local ref = cls.head(test, o["ref-n"])
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
