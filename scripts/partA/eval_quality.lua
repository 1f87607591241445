-- Part A, "Quality, measured": reads samples of a trained DDPM with the MNIST
-- classifier (fdm.classifier, weights/mnist_classifier.safetensors).
--   (1) CFG (1.6): --n samples per digit with guidance --cfg; the share read
--       as the requested digit, per digit and overall.
--   (2) anagrams (1.8): per pair p1:p2[:view], the share read as p1 upright,
--       as p2 in the transformed view, and both at once.
--   (3) hybrids (1.9): per pair low:high, the share read as `low` in the
--       low-pass readout, as `high` in the high-pass readout, and both.
-- Readouts (classifier inputs are [0,1] images, the DDPM works in [-1,1]):
--   sample / view:  (x + 1) / 2 clamped to [0,1]
--   low-pass:       L = the hybrids' low-pass of x (--filter: by default the
--                   calibrated one for the image size, D.hybrid_filter: on
--                   28x28 digits the DCT projection keeping 6 frequencies per
--                   axis), rescaled to [0,1] by its per-image min/max, then
--                   contrast-stretched clamp((L - 0.3) / 0.7, 0, 1)
--   high-pass:      clamp(x - L, 0, 1), the positive part (stroke cores on black)
-- The high-pass is NOT min/max-rescaled: that leaves a mid-gray background
-- the classifier reads badly (about 18% right on real MNIST digits, against
-- about 99% for the positive part). The --ref real test digits calibrate every
-- readout: the report lists how often real digits are read right through it,
-- and, per hybrid pair, how often a hybrid made of real digits (the far
-- digit's low-pass plus the near digit's high-pass, clamped to [-1, 1]) is
-- read both ways: the ceiling the readouts allow.
--   ./build/fdm scripts/partA/eval_quality.lua [--model weights/ddpm_mnist.safetensors]
--       [--n 50] [--steps 34] [--cfg 7] [--seed 180] [--pairs "6:9:rot180,2:5:flip"]
--       [--view rot180] [--hybrid-pairs "0:1,8:7"] [--sections cfg,anagrams,hybrids]
-- Writes out/partA/quality.txt (--report: the table as comments, then a Lua
-- table: `return {...}`) and out/partA/quality_examples.png (--examples).
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local C = dofile(here .. "/common.lua")
local D, M = C.D, C.M
local fdm = rawget(_G, "fdm") or require "fdm"
local cls = require "fdm.classifier"

local VIEWS = { "flip", "rot180", "rot90", "rot270", "negate", "jigsaw" }
local DEFAULT_PAIRS = "6:9:rot180,6:9:flip,2:5:flip,1:1:rot180,0:0:rot180,8:8:rot180,3:8:flip,2:7:flip"
local DEFAULT_HYBRIDS = "0:1,8:7,1:8,0:6,7:1"
local LOW_STRETCH = 0.3

local args = C.parse("eval_quality", "Part A: classifier-measured quality of CFG, anagrams and hybrids", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold", "filter", "keep", "kernel", "sigma",
  { "n", "int", 50, "samples per digit (CFG) and per pair (anagrams, hybrids)", min = 1 },
  { "pairs", "string", DEFAULT_PAIRS, "anagram pairs p1:p2[:view], comma-separated (view: " .. table.concat(VIEWS, ", ") .. ")" },
  { "view", "choice", "rot180", "the view of --pairs entries that name none", choices = VIEWS },
  { "hybrid-pairs", "string", DEFAULT_HYBRIDS, "hybrid pairs low:high (far:near), comma-separated" },
  { "hybrid-cfg-low", "number", nil, "hybrids: CFG scale of the far (low-pass) prompt (default --cfg)" },
  { "hybrid-cfg-high", "number", nil, "hybrids: CFG scale of the near (high-pass) prompt (default --cfg)" },
  { "hybrid-isolate", "choice", "auto", "hybrids: what each prompt's pass sees of the other band (auto: own under 64 px, else none)",
    choices = C.ISOLATE_CHOICES },
  { "hybrid-low-above", "int", nil, "hybrids: timesteps t >= this take the far prompt's whole estimate", min = 0 },
  { "sections", "string", "cfg,anagrams,hybrids", "what to measure (comma-separated subset)" },
  { "ref", "int", 1000, "MNIST test digits for the readout calibration (0 = skip)", min = 0 },
  { "classifier", "string", nil, "classifier weights (default weights/mnist_classifier.safetensors)" },
  { "report", "string", nil, "report file (default OUT/quality.txt)" },
  { "examples", "string", nil, "example grid PNG (default OUT/quality_examples.png)" },
}, { cfg = 7 }, "scripts/partA/eval_quality.lua")
args.report = args.report or (args.out .. "/quality.txt")
args.examples = args.examples or (args.out .. "/quality_examples.png")

local function fail(msg) require("fdm.cli").usage_error("eval_quality: " .. msg) end

---------------------------------------------------------------- options
local sections = {}
for _, s in ipairs(C.split(args.sections)) do
  if s ~= "cfg" and s ~= "anagrams" and s ~= "hybrids" then fail("unknown section '" .. s .. "' (cfg, anagrams, hybrids)") end
  sections[s] = true
end

local function digit(s, what)
  local d = tonumber(s)
  if not d or d ~= math.floor(d) or d < 0 or d > 9 then fail(("%s: '%s' is not a digit 0..9"):format(what, tostring(s))) end
  return math.tointeger(d)
end

local pairs_list = {}
for _, item in ipairs(C.split(args.pairs)) do
  if item ~= "" then
    local f = C.split(item, ":")
    if #f < 2 or #f > 3 then fail("--pairs: '" .. item .. "' is not p1:p2 or p1:p2:view") end
    local v = f[3] or args.view
    local okv = false
    for _, name in ipairs(VIEWS) do if name == v then okv = true end end
    if not okv then fail("--pairs: unknown view '" .. v .. "' (" .. table.concat(VIEWS, ", ") .. ")") end
    pairs_list[#pairs_list + 1] = { p1 = digit(f[1], "--pairs"), p2 = digit(f[2], "--pairs"), view = v }
  end
end
local hybrid_list = {}
for _, item in ipairs(C.split(args.hybrid_pairs)) do
  if item ~= "" then
    local f = C.split(item, ":")
    if #f ~= 2 then fail("--hybrid-pairs: '" .. item .. "' is not low:high") end
    hybrid_list[#hybrid_list + 1] = { low = digit(f[1], "--hybrid-pairs"), high = digit(f[2], "--hybrid-pairs") }
  end
end

local function shell_quote(s)
  if s:match("^[%w%._/:,=%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
local cmd = { "./build/fdm", arg[0] }
for i = 1, #arg do cmd[#cmd + 1] = shell_quote(arg[i]) end
local command = table.concat(cmd, " ")

---------------------------------------------------------------- setup
local model = C.load_model(args)
if C.IF then fail("--model: the quality measures read MNIST digits with the MNIST classifier; they do not apply to a DeepFloyd IF folder") end
local net = cls.load(args.classifier, { what = "eval_quality: --classifier" })
local ts = C.timesteps(args)
local uncond = C.encode(model, "", args)
local guided = args.cfg ~= 1
local filter = C.hybrid_filter(args, model)
local filter_name = D.filter_name(filter)
local hybrid_cfg_high = args.hybrid_cfg_high or args.cfg
local hybrid_isolate = C.hybrid_isolate(args.hybrid_isolate, model)
print(("model %s (D=%s), classifier %s"):format(args.model, tostring(model.hidden), args.classifier or cls.default_weights()))
print(("seed %d, n %d, %d steps (%d..%d), cfg %g%s"):format(args.seed, args.n, #ts, ts[1], ts[#ts], args.cfg,
  args.threshold and ", dynamic thresholding" or ""))

-- readouts: model space [-1,1] -> classifier input [0,1]
local function minmax01(v)
  local n = v.shape[1]
  local f = v:reshape(n, v:numel() // n)
  local lo, hi = f:min(2):reshape(n, 1, 1, 1), f:max(2):reshape(n, 1, 1, 1)
  return (v - lo) / fdm.clamp(hi - lo, 1e-6)
end
local R = {}
function R.image(x) return M.from_model(x) end
function R.lowpass(x) return D.lowpass(x, filter) end
function R.low(x)  -- x: model space; the low-pass, normalised and contrast-stretched
  return fdm.clamp((minmax01(R.lowpass(x)) - LOW_STRETCH) / (1 - LOW_STRETCH), 0, 1)
end
function R.high(x) return fdm.clamp(x - R.lowpass(x), 0, 1) end
-- the brief's literal readouts, kept for comparison
function R.low_plain(x) return M.from_model(R.lowpass(x)) end
function R.high_minmax(x) return minmax01(x - R.lowpass(x)) end

local function predict(x01) return cls.predict(net, x01):tolist() end

-- An almost empty band is no reading (the classifier reads a blank image as
-- a "1"). A hybrid's low band counts only with a contrast (max - min of L)
-- and its high band only with an ink (sum of the high readout) of at least
-- half the faintest 1 % of real test digits; a fainter band reads as "blank".
local function per_image(v, fn) local n = v.shape[1]; return fn(v:reshape(n, v:numel() // n)):tolist() end
function R.low_contrast(x) return per_image(R.lowpass(x), function(f) return f:max(2) - f:min(2) end) end
function R.high_ink(x) return per_image(R.high(x), function(f) return f:sum(2) end) end
-- the limits from the first 1000 test digits (nil without the test set)
local function blank_guard()
  local okd, ds = pcall(C.mnist_test)
  if not okd then return nil end
  local n = math.min(1000, ds.n or ds.images.shape[1])
  local x = M.to_model(ds.images:narrow(1, 1, n):contiguous())
  local function faintest(list) table.sort(list); return list[math.max(1, math.floor(#list * 0.01))] end
  return { low = 0.5 * faintest(R.low_contrast(x)), high = 0.5 * faintest(R.high_ink(x)), n = n }
end
local BLANK_READ = -1
-- the classifier's readings of a band, BLANK_READ where the band is too faint
local function predict_band(x01, measures, limit)
  local p = predict(x01)
  if limit then for i = 1, #p do if measures[i] < limit then p[i] = BLANK_READ end end end
  return p
end
local function share(k, n) return n > 0 and k / n or 0 end
local function fmt(v) return ("%.3f"):format(v) end

local clock = C.timer()
local timing = { images = 0, evals = 0, seconds = 0 }
local function timed_sample(n, passes, fn)
  local t0 = fdm.time()
  local x = fdm.no_grad(fn)
  local dt = fdm.time() - t0
  timing.images = timing.images + n
  timing.evals = timing.evals + n * passes * (#ts - 1)
  timing.seconds = timing.seconds + dt
  return x, dt
end

local result = {
  command = command, model = args.model, hidden = model.hidden,
  classifier = args.classifier or cls.default_weights(),
  seed = args.seed, n = args.n, steps = #ts, cfg = args.cfg, threshold = args.threshold or false,
  readouts = {
    image = "(x + 1) / 2 clamped to [0,1]",
    low = ("L = %s of x, per-image min/max to [0,1], then clamp((v - %.1f) / %.1f, 0, 1)"):format(
      filter_name, LOW_STRETCH, 1 - LOW_STRETCH),
    high = ("clamp(x - L, 0, 1), L = %s of x (positive part, no rescaling)"):format(filter_name),
    low_plain = "(L + 1) / 2 clamped (the brief's plain low-pass)",
    high_minmax = "x - L, per-image min/max to [0,1] (the brief's readout)",
  },
}
local lines = {}   -- the human table (printed and written as comments)
local function out(s) print(s); lines[#lines + 1] = s end

-- example grid: 10 columns
local ex_imgs, ex_caps, ex_rows = {}, {}, {}
local BLANK = fdm.zeros(1, 1, 28, 28)
local function ex_add(img01, cap) ex_imgs[#ex_imgs + 1] = img01; ex_caps[#ex_caps + 1] = cap end
local function ex_pad_row(name)
  while #ex_imgs % 10 ~= 0 do ex_add(BLANK, "") end
  ex_rows[#ex_rows + 1] = name
end
local function mark(pred, want)
  return pred == want and ("ok " .. want) or pred == BLANK_READ and "blank" or ("as " .. pred)
end

---------------------------------------------------------------- readout calibration
if args.ref > 0 then
  local okd, ds = pcall(C.mnist_test)
  if not okd then
    out("readout calibration skipped: no MNIST test set (" .. tostring(ds):gsub("\n.*", "") .. ")")
  else
    local n = math.min(args.ref, ds.n or ds.images.shape[1])
    local x = M.to_model(ds.images:narrow(1, 1, n):contiguous())
    local y = ds.labels:narrow(1, 1, n):tolist()
    local function indices_of(d)   -- 0-based rows of the real digits labelled d
      local idx = {}
      for i = 1, n do if y[i] == d then idx[#idx + 1] = i - 1 end end
      return idx
    end
    local function acc(x01)
      local p, k = predict(x01), 0
      for i = 1, n do if p[i] == y[i] then k = k + 1 end end
      return k / n
    end
    local ref = { n = n, image = acc(R.image(x)), low = acc(R.low(x)), high = acc(R.high(x)),
      low_plain = acc(R.low_plain(x)), high_minmax = acc(R.high_minmax(x)), anagrams = {} }
    out(("readout calibration on %d real MNIST test digits (share read as their label):"):format(n))
    out(("  image %s | low-pass %s (plain %s) | high-pass %s (min/max-rescaled %s)"):format(
      fmt(ref.image), fmt(ref.low), fmt(ref.low_plain), fmt(ref.high), fmt(ref.high_minmax)))
    if sections.anagrams and #pairs_list > 0 then
      local parts = {}
      for _, pr in ipairs(pairs_list) do
        local idx = indices_of(pr.p1)
        local r = 0 / 0
        if #idx > 0 then
          local xi = fdm.index_select(x, 1, fdm.tensor(idx, { dtype = "int64" }))
          local p, k = predict(R.image(D.view_by_name(pr.view).apply(xi))), 0
          for i = 1, #p do if p[i] == pr.p2 then k = k + 1 end end
          r = k / #idx
        end
        local key = ("%d:%d:%s"):format(pr.p1, pr.p2, pr.view)
        ref.anagrams[key] = r
        parts[#parts + 1] = ("%s %s"):format(key, fmt(r))
      end
      out("  real p1 digits whose view reads as p2: " .. table.concat(parts, ", "))
    end
    if sections.hybrids and #hybrid_list > 0 then
      -- hybrids made of real digits: the i-th far digit's low-pass plus the
      -- i-th near digit's high-pass (a digit never paired with itself)
      local parts = {}
      ref.hybrids = {}
      for _, h in ipairs(hybrid_list) do
        local fi, ni = indices_of(h.low), indices_of(h.high)
        if h.low == h.high then   -- split the digit's images into two halves
          local half = #fi // 2
          ni = table.move(fi, half + 1, 2 * half, 1, {})
          fi = table.move(fi, 1, half, 1, {})
        end
        local m = math.min(#fi, #ni)
        local r = 0 / 0
        if m > 0 then
          local function pick(idx) return fdm.index_select(x, 1, fdm.tensor(table.move(idx, 1, m, 1, {}), { dtype = "int64" })) end
          local far, near = pick(fi), pick(ni)
          local hyb = fdm.clamp(R.lowpass(far) + near - R.lowpass(near), -1, 1)
          local a, b, k = predict(R.low(hyb)), predict(R.high(hyb)), 0
          for j = 1, m do if a[j] == h.low and b[j] == h.high then k = k + 1 end end
          r = k / m
        end
        local key = ("%d:%d"):format(h.low, h.high)
        ref.hybrids[key] = r
        parts[#parts + 1] = ("%s %s"):format(key, fmt(r))
      end
      out(("  hybrids of real digits (%s) read both ways: %s"):format(filter_name, table.concat(parts, ", ")))
    end
    result.reference = ref
  end
end

---------------------------------------------------------------- (1) CFG
if sections.cfg then
  local per, total, correct = {}, 0, 0
  out("")
  out(("[cfg] CFG %g, %d samples per digit: share read as the requested digit"):format(args.cfg, args.n))
  out("  digit |   n | read as digit | most common misreading")
  local keep = {}
  for d = 0, 9 do
    local seed = args.seed + d
    fdm.manual_seed(seed)
    local cond = C.encode(model, tostring(d), args)
    local x, dt = timed_sample(args.n, guided and 2 or 1, function()
      return D.sample(model, args.n, C.sampler_opts(args, { cond = cond, uncond = uncond, cfg = args.cfg, timesteps = ts }))
    end)
    local p = predict(R.image(x))
    local k, wrong = 0, {}
    for i = 1, #p do
      if p[i] == d then k = k + 1 else wrong[p[i]] = (wrong[p[i]] or 0) + 1 end
    end
    local wd, wc = nil, 0
    for w, c in pairs(wrong) do if c > wc or (c == wc and w < wd) then wd, wc = w, c end end
    per[d] = { n = args.n, correct = k, share = share(k, args.n), seed = seed, misread = wd, misread_n = wc, seconds = dt }
    total, correct = total + args.n, correct + k
    out(("  %5d | %3d | %13s | %s"):format(d, args.n, fmt(per[d].share), wd and ("%d (%d)"):format(wd, wc) or "-"))
    keep[d] = { x = x, p = p }
  end
  local overall = share(correct, total)
  out(("  overall %s (%d/%d)"):format(fmt(overall), correct, total))
  result.cfg = { overall = overall, n = total, correct = correct, per_digit = per, seeds = ("%d + digit"):format(args.seed) }
  for r = 1, math.min(2, args.n) do
    for d = 0, 9 do ex_add(R.image(keep[d].x:narrow(1, r, 1)), mark(keep[d].p[r], d)) end
    ex_pad_row(("CFG %g #%d"):format(args.cfg, r))
  end
end

---------------------------------------------------------------- (2) anagrams
if sections.anagrams and #pairs_list > 0 then
  out("")
  out(("[anagrams] CFG %g, %d samples per pair: share read as p1 upright, as p2 in the view, both"):format(args.cfg, args.n))
  out("  pair         |   n |    p1 |    p2 |  both | seed")
  result.anagrams = {}
  for i, pr in ipairs(pairs_list) do
    local seed = args.seed + 100 + i
    fdm.manual_seed(seed)
    local x, dt = timed_sample(args.n, 2 * (guided and 2 or 1), function()
      return (C.anagram(model, { tostring(pr.p1), tostring(pr.p2) }, { "identity", pr.view }, args, args.n))
    end)
    local viewed = D.view_by_name(pr.view).apply(x)
    local a, b = predict(R.image(x)), predict(R.image(viewed))
    local k1, k2, kb = 0, 0, 0
    for j = 1, args.n do
      local o1, o2 = a[j] == pr.p1, b[j] == pr.p2
      if o1 then k1 = k1 + 1 end
      if o2 then k2 = k2 + 1 end
      if o1 and o2 then kb = kb + 1 end
    end
    local key = ("%d:%d:%s"):format(pr.p1, pr.p2, pr.view)
    local r = { pair = key, p1 = share(k1, args.n), p2 = share(k2, args.n), both = share(kb, args.n), n = args.n,
      seed = seed, seconds = dt }
    result.anagrams[i] = r
    out(("  %-12s | %3d | %s | %s | %s | %d"):format(key, args.n, fmt(r.p1), fmt(r.p2), fmt(r.both), seed))
    for j = 1, math.min(5, args.n) do
      ex_add(R.image(x:narrow(1, j, 1)), mark(a[j], pr.p1))
      ex_add(R.image(viewed:narrow(1, j, 1)), mark(b[j], pr.p2))
    end
    ex_pad_row(("%s (upright | view)"):format(key))
  end
end

---------------------------------------------------------------- (3) hybrids
if sections.hybrids and #hybrid_list > 0 then
  out("")
  out(("[hybrids] CFG %g (far %g, near %g)%s, %d samples per pair, low-pass = %s"):format(args.cfg,
    args.hybrid_cfg_low or args.cfg, hybrid_cfg_high,
    (args.hybrid_low_above and (", far prompt alone for t >= " .. args.hybrid_low_above) or "")
    .. (hybrid_isolate and (", isolated bands: " .. hybrid_isolate) or ""), args.n, filter_name))
  out("  read as `low` in the low-pass (min/max-normalised, contrast-stretched) and as `high` in the high-pass")
  out("  (positive part of x - lowpass(x), not min/max-rescaled); [plain low | min/max high] = the literal readouts")
  local guard = blank_guard()
  if guard then
    out(("  a band reads as blank below half the faintest 1 %% of %d real digits: low-band contrast %.3f, high-band ink %.2f"):format(
      guard.n, guard.low, guard.high))
    result.blank_guard = { low_contrast = guard.low, high_ink = guard.high, real_digits = guard.n }
  else
    out("  no MNIST test set: faint bands are not flagged as blank")
  end
  out("  low:high |   n |   low |  high |  both | seed | plain low | min/max high | blank low/high")
  result.hybrids = {}
  result.hybrid_options = { filter = filter, cfg_low = args.hybrid_cfg_low or args.cfg,
    cfg_high = hybrid_cfg_high, low_above = args.hybrid_low_above, isolate = hybrid_isolate or "none" }
  for i, h in ipairs(hybrid_list) do
    local seed = args.seed + 200 + i
    fdm.manual_seed(seed)
    local est = D.hybrid(model, C.encode(model, tostring(h.low), args), C.encode(model, tostring(h.high), args),
      uncond, args.cfg, { filter = filter, cfg_low = args.hybrid_cfg_low,
        cfg_high = hybrid_cfg_high, low_above = args.hybrid_low_above,
        isolate = hybrid_isolate })
    -- far and near passes, with CFG an unconditional pass on each input (one when both see x)
    local x, dt = timed_sample(args.n, (guided and (hybrid_isolate and 4 or 3) or 2), function()
      return D.sample(model, args.n, C.sampler_opts(args, { estimator = est, timesteps = ts }))
    end)
    x = fdm.clamp(x, -1, 1)   -- read the image as it is shown (a sampler without clipping may leave [-1, 1])
    local lo, hi = R.low(x), R.high(x)
    local a = predict_band(lo, R.low_contrast(x), guard and guard.low)
    local b = predict_band(hi, R.high_ink(x), guard and guard.high)
    local a2, b2 = predict(R.low_plain(x)), predict(R.high_minmax(x))
    local k1, k2, kb, l2, h2, bl, bh = 0, 0, 0, 0, 0, 0, 0
    for j = 1, args.n do
      if a[j] == BLANK_READ then bl = bl + 1 end
      if b[j] == BLANK_READ then bh = bh + 1 end
      local o1, o2 = a[j] == h.low, b[j] == h.high
      if o1 then k1 = k1 + 1 end
      if o2 then k2 = k2 + 1 end
      if o1 and o2 then kb = kb + 1 end
      if a2[j] == h.low then l2 = l2 + 1 end
      if b2[j] == h.high then h2 = h2 + 1 end
    end
    local key = ("%d:%d"):format(h.low, h.high)
    local r = { pair = key, low = share(k1, args.n), high = share(k2, args.n), both = share(kb, args.n), n = args.n,
      low_plain = share(l2, args.n), high_minmax = share(h2, args.n), seed = seed, seconds = dt,
      blank_low = bl, blank_high = bh }
    result.hybrids[i] = r
    out(("  %-8s | %3d | %s | %s | %s | %4d | %9s | %12s | %d/%d"):format(key, args.n, fmt(r.low), fmt(r.high), fmt(r.both), seed,
      fmt(r.low_plain), fmt(r.high_minmax), bl, bh))
    for j = 1, math.min(3, args.n) do
      ex_add(R.image(x:narrow(1, j, 1)), "hybrid")
      ex_add(lo:narrow(1, j, 1), "lo " .. mark(a[j], h.low))
      ex_add(hi:narrow(1, j, 1), "hi " .. mark(b[j], h.high))
    end
    ex_pad_row(("far %d / near %d (hybrid | low | high)"):format(h.low, h.high))
  end
end

---------------------------------------------------------------- timing
local rate = timing.seconds > 0 and timing.images / timing.seconds or 0
local eval_rate = timing.seconds > 0 and timing.evals / timing.seconds or 0
-- the workload of the defaults (--n 50, 34 steps, the default pairs) in model image-evaluations
local function count(s) local k = 0; for _ in s:gmatch("[^,]+") do k = k + 1 end; return k end
local default_evals = 33 * 50 * (10 * 2 + count(DEFAULT_PAIRS) * 4 + count(DEFAULT_HYBRIDS) * 4)
local estimate = eval_rate > 0 and default_evals / eval_rate or 0
out("")
out(("timing: %d images (%d model image-evaluations) in %.1f s of sampling: %.2f images/s, %.0f evals/s; %.1f s in all")
  :format(timing.images, timing.evals, timing.seconds, rate, eval_rate, clock()))
out(("  the defaults (--n 50, 34 steps, default pairs: %d evals) would take about %.1f min with this model at this speed")
  :format(default_evals, estimate / 60))
out(("  (measured with batches of %d images per group; smaller batches run slower per image)"):format(args.n))
result.timing = { images = timing.images, evals = timing.evals, sampling_seconds = timing.seconds, images_per_s = rate,
  evals_per_s = eval_rate, total_seconds = clock(), default_evals = default_evals, default_estimate_s = estimate }

---------------------------------------------------------------- outputs
local function dir_of(p) return p:match("^(.*)/[^/]*$") end
if #ex_imgs > 0 then
  if dir_of(args.examples) then C.mkdir(dir_of(args.examples)) end
  C.save_grid01(args.examples, ex_imgs, { nrow = 10, captions = ex_caps, row_captions = ex_rows, scale = 3,
    title = ("%s: CFG %g, %d steps, seed %d (ok d = read as wanted)"):format(args.model, args.cfg, #ts, args.seed) })
  result.examples = args.examples
end

-- a Lua table (keys sorted, numbers with full precision)
local function ser(v, ind)
  local t = type(v)
  if t == "number" then
    if v ~= v then return "0/0" end
    if math.type(v) == "integer" then return tostring(v) end
    return ("%.10g"):format(v)
  elseif t == "string" then return ("%q"):format(v)
  elseif t == "boolean" or t == "nil" then return tostring(v)
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  local pad = ind .. "  "
  local parts = {}
  for _, k in ipairs(keys) do
    local kk = type(k) == "number" and ("[" .. k .. "]") or (k:match("^[%a_][%w_]*$") and k or ("[%q]"):format(k))
    parts[#parts + 1] = pad .. kk .. " = " .. ser(v[k], pad)
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
end

if dir_of(args.report) then C.mkdir(dir_of(args.report)) end
local f = io.open(args.report, "w")
if not f then fail("cannot write --report " .. args.report) end
f:write("-- fdm Part A quality (scripts/partA/eval_quality.lua)\n")
f:write("-- command: " .. command .. "\n")
f:write(("-- model: %s (D=%s); seed %d; n %d; %d steps; cfg %g\n"):format(args.model, tostring(model.hidden), args.seed,
  args.n, #ts, args.cfg))
for _, l in ipairs(lines) do f:write("-- " .. l .. "\n") end
f:write("return " .. ser(result, "") .. "\n")
f:close()
print("wrote " .. args.report)
