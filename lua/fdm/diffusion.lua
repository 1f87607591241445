-- fdm.diffusion: the Part A algorithms (shared/spec/fun-with-diffusion.md,
-- Part A) over any epsilon-prediction model with the interface
--
--   eps, var = model(x_t, t, cond)     -- t: an integer timestep (number) or int64 [N];
--                                      -- var: absent for fixed-variance models, else the
--                                      -- raw learned_range output v in [-1, 1] (DeepFloyd IF)
--   model.schedule                     -- a diffusion.Schedule (alphas_cumprod ...)
--   model:encode(prompt) -> cond       -- "" = unconditional; unknown prompts raise
--   model.image_shape = {C, H, W}, model.device, model.clip_x0 (optional default)
--
-- Conditions are tensors whose first dimension is 1 (broadcast) or N; several
-- (x, cond) passes of one step are batched into one model call (eval_batch).
--
-- Schedules and timesteps
--   local D = require "fdm.diffusion"
--   local sch = D.Schedule{kind = "cosine", T = 1000}   -- "squaredcos_cap_v2" | "linear"
--   sch:abar(t) (t = -1 -> 1), sch:beta(t), sch.alphas_cumprod (float32 [T])
--   D.strided_timesteps()              -- {990, 960, ..., 30, 0} (stride 30, 34 entries)
--   D.strided_timesteps{steps = 20}    -- 20 entries from ~T down to 0
-- One-shot operations
--   D.forward(model_or_sched, x0, t [, noise]) -> x_t, noise
--   D.x0_from_eps(sched, x_t, t, eps) ; D.eps_from_x0(...)
--   D.one_step_denoise(model, x_t, t, cond [, opts]) -> x0_hat, eps
--   D.threshold(x0, ratio, max) (dynamic thresholding as IF)
-- Noise estimators est(x, t) -> eps, var (compose them, pass to a Sampler)
--   D.conditional(model, cond)
--   D.cfg(model, cond, uncond, g)      -- eps = eps_u + g (eps_c - eps_u); var of the cond pass
--   D.anagram(model, {{cond=, view=}, ...}, uncond, g)   -- mean of view^-1(eps(view(x)))
--   D.hybrid(model, cond_low, cond_high, uncond, g, {filter = D.hybrid_filter(model.image_shape), isolate = "own"})
--   D.lowpass(x, filter) ; D.hybrid_filter(image_shape) (Gaussian k33 s2 from 64 px up, DCT below)
--   D.views.identity / flip / rot90 / rot180 / rot270 / negate / jigsaw(grid, perm)
-- Samplers: objects a script creates and steps
--   local s = D.Sampler(model, {x = x_t | n = 4, i_start = 0, timesteps = ...,
--                               cond =, uncond =, cfg =, estimator =,
--                               add_variance = true, variance = "fixed_small"|"learned_range"|nil,
--                               clip_x0 =, threshold = true | {ratio =, max =},
--                               inpaint = {x_orig =, mask =}, hooks = {fn, ...}})
--                               graph = true | {emulate = true}: one step captured as a
--                               CUDA graph and replayed (fdm.graph), the same numbers;
--                               the model must take t as an int64 tensor, hooks run
--                               after each replay
--   s:step() (one strided step; returns the new x), s:run(), s:done(), s.x, s.t, s.i,
--   s.x0_hat, s.eps, s:add_hook(fn): fn(s, ev) after every step, ev = {i, t, t_next,
--   x, x0_hat, eps, last}; a hook may return a replacement x (edit x_t).
--   D.iterative_denoise(model, x, opts), D.sample(model, n, opts), D.sdedit(model,
--   x_orig, i_start, opts), D.inpaint(model, x_orig, mask, opts)
local fdm = require "fdm"
local F = fdm.F

local D = {}

---------------------------------------------------------------- schedules
local Schedule = {}
Schedule.__index = Schedule
D.Schedule_class = Schedule

local function cosine_abar_fn(t) -- t in [0, 1]
  return math.cos((t + 0.008) / 1.008 * math.pi / 2) ^ 2
end

-- betas as a Lua list, betas[t + 1] for t = 0 .. T-1
function D.betas(kind, T, opts)
  opts = opts or {}
  T = T or 1000
  local betas = {}
  if kind == "cosine" or kind == "squaredcos_cap_v2" then
    local max_beta = opts.max_beta or 0.999
    for i = 0, T - 1 do
      betas[i + 1] = math.min(1 - cosine_abar_fn((i + 1) / T) / cosine_abar_fn(i / T), max_beta)
    end
  elseif kind == "linear" then
    local b0, b1 = opts.beta_start or 1e-4, opts.beta_end or 0.02
    for i = 0, T - 1 do
      betas[i + 1] = T == 1 and b0 or b0 + (b1 - b0) * i / (T - 1)
    end
  else
    error("diffusion: unknown beta schedule '" .. tostring(kind) .. "' (cosine, squaredcos_cap_v2, linear)", 2)
  end
  return betas
end

-- Schedule{kind = "cosine", T = 1000} or Schedule{betas = {...}}
function D.Schedule(opts)
  opts = opts or {}
  local kind = opts.kind or "cosine"
  local betas = opts.betas or D.betas(kind, opts.T or 1000, opts)
  local T = #betas
  local abar, p = {}, 1.0
  for i = 1, T do
    p = p * (1 - betas[i])
    abar[i] = p
  end
  local self = setmetatable({ kind = opts.betas and "custom" or kind, T = T, betas_list = betas, abar_list = abar }, Schedule)
  self.betas = fdm.tensor(betas)
  self.alphas_cumprod = fdm.tensor(abar)
  return self
end

-- alphas_cumprod at integer timestep t (0-based); t < 0 -> 1 (clean)
function Schedule:abar(t)
  if t < 0 then return 1.0 end
  local v = self.abar_list[math.tointeger(t) + 1]
  if v == nil then error(("diffusion: timestep %s outside [0, %d)"):format(tostring(t), self.T), 2) end
  return v
end

function Schedule:beta(t) return self.betas_list[math.tointeger(t) + 1] end

local function sched_of(m)
  if getmetatable(m) == Schedule then return m end
  if type(m) == "table" and m.schedule then return m.schedule end
  error("diffusion: a model with .schedule or a diffusion.Schedule expected", 3)
end
D.sched_of = sched_of

---------------------------------------------------------------- timesteps
-- {990, 960, ..., 0}: opts.stride / opts.start, or opts.steps entries
-- (stride floor((T-1)/(steps-1)), start stride*(steps-1): steps = 34 gives
-- the course's list). T defaults to 1000.
function D.strided_timesteps(opts)
  opts = opts or {}
  local T = opts.T or 1000
  local stride, start
  if opts.steps then
    local n = math.tointeger(opts.steps)
    assert(n and n >= 2, "strided_timesteps: steps must be an integer >= 2")
    assert(n <= T, "strided_timesteps: more steps than T")
    stride = (T - 1) // (n - 1)
    start = stride * (n - 1)
  else
    stride = opts.stride or 30
    start = opts.start or (((T - 1) // stride) * stride)
  end
  local ts = {}
  for t = start, 0, -stride do ts[#ts + 1] = t end
  return ts
end

-- index (0-based) of the entry of ts closest to timestep t
function D.index_for_t(ts, t)
  local best, bi = math.huge, 0
  for i, v in ipairs(ts) do
    if math.abs(v - t) < best then best, bi = math.abs(v - t), i - 1 end
  end
  return bi
end

---------------------------------------------------------------- one-shot ops
local function col(v, n, device)  -- per-sample scalars -> [N,1,1,1]
  if type(v) == "number" then return v end
  return v:reshape(n, 1, 1, 1)
end

-- x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; t a number
function D.forward(m, x0, t, noise)
  local sch = sched_of(m)
  noise = noise or fdm.randn_like(x0)
  local ab = sch:abar(t)
  return x0 * math.sqrt(ab) + noise * math.sqrt(1 - ab), noise
end

function D.x0_from_eps(m, x_t, t, eps)
  local ab = sched_of(m):abar(t)
  return (x_t - eps * math.sqrt(1 - ab)) * (1 / math.sqrt(ab))
end

function D.eps_from_x0(m, x_t, t, x0)
  local ab = sched_of(m):abar(t)
  return (x_t - x0 * math.sqrt(ab)) * (1 / math.sqrt(1 - ab))
end

-- dynamic thresholding (Imagen; diffusers _threshold_sample as IF uses it):
-- s = quantile(|x0|, ratio) per sample, s = max(s, 1) (and min(s, max) when
-- max is given); x0 = clamp(x0, -s, s) / s
function D.threshold(x0, ratio, max)
  local n = x0.shape[1]
  local s = fdm.quantile(x0:abs():reshape(n, x0:numel() // n), ratio or 0.995, 2)
  s = fdm.clamp(s, 1, max)
  s = s:reshape(n, 1, 1, 1)
  return fdm.minimum(fdm.maximum(x0, -s), s) / s
end

---------------------------------------------------------------- batched model calls
local function expand_cond(c, n)
  if type(c) ~= "userdata" then return nil end
  local s = c.shape
  if s[1] == n then return c end
  if s[1] ~= 1 then error(("diffusion: condition batch %d does not match %d images"):format(s[1], n), 3) end
  local shape = { n }
  for i = 2, #s do shape[i] = s[i] end
  return c:expand(shape)
end

-- jobs = {{x =, cond =}, ...} at timestep t -> list of {eps, var}; one model
-- call when every cond is a tensor and model.batch_conds ~= false
function D.eval_batch(model, jobs, t)
  local out = {}
  local batchable = model.batch_conds ~= false and #jobs > 1
  if batchable then
    for _, j in ipairs(jobs) do if type(j.cond) ~= "userdata" then batchable = false end end
  end
  if not batchable then
    for i, j in ipairs(jobs) do
      local e, v = model(j.x, t, j.cond)
      out[i] = { e, v }
    end
    return out
  end
  local xs, cs, sizes = {}, {}, {}
  for i, j in ipairs(jobs) do
    local n = j.x.shape[1]
    xs[i], cs[i], sizes[i] = j.x, expand_cond(j.cond, n), n
  end
  local eps, var = model(fdm.cat(xs, 1), t, fdm.cat(cs, 1))
  local s = 1
  for i, n in ipairs(sizes) do
    out[i] = { eps:narrow(1, s, n), var and var:narrow(1, s, n) or nil }
    s = s + n
  end
  return out
end

---------------------------------------------------------------- noise estimators
function D.conditional(model, cond)
  return function(x, t) return model(x, t, cond) end
end

-- eps = eps_u + g (eps_c - eps_u), written eps_c + (g - 1)(eps_c - eps_u) so
-- that g = 1 gives the conditional estimate exactly; var from the cond pass
local function guide(ec, eu, g)
  if g == 1 then return ec end
  return ec + (ec - eu) * (g - 1)
end
D.guide = guide

function D.cfg(model, cond, uncond, g)
  -- g = 1 (or no uncond): the conditional estimate itself, one pass
  if g == nil or g == 1 or uncond == nil then return D.conditional(model, cond) end
  return function(x, t)
    local r = D.eval_batch(model, { { x = x, cond = cond }, { x = x, cond = uncond } }, t)
    return guide(r[1][1], r[2][1], g), r[1][2]
  end
end

-- views for visual anagrams: apply(x) transforms the image, inverse(eps) maps
-- the estimate back, inverse_var(var) maps a variance map back (spatial only)
local function view(name, apply, inverse, inverse_var)
  return { name = name, apply = apply, inverse = inverse, inverse_var = inverse_var or inverse }
end
local function rot_ccw(x) return x:flip(4):transpose(3, 4):contiguous() end
local function rot_cw(x) return x:transpose(3, 4):flip(4):contiguous() end
local function id(x) return x end

D.views = {
  identity = view("identity", id, id),
  flip = view("flip", function(x) return x:flip(3) end, function(x) return x:flip(3) end),   -- upside down
  rot180 = view("rot180", function(x) return x:flip(3, 4) end, function(x) return x:flip(3, 4) end),
  rot90 = view("rot90", rot_ccw, rot_cw),     -- 90 degrees counter-clockwise
  rot270 = view("rot270", rot_cw, rot_ccw),
  negate = view("negate", function(x) return -x end, function(x) return -x end, id),
}

-- permutation of a grid x grid of square patches (the image side must be a
-- multiple of grid); perm: 1-based list, patch k of the view is patch perm[k]
-- of the image (default: a fixed derangement, reversed order)
function D.views.jigsaw(grid, perm)
  grid = grid or 4
  local n = grid * grid
  if not perm then perm = {}; for k = 1, n do perm[k] = n + 1 - k end end
  assert(#perm == n, "jigsaw: the permutation needs grid*grid entries")
  local inv = {}
  for k, p in ipairs(perm) do inv[p] = k end
  local function permute(x, pm)
    local H, W = x.shape[3], x.shape[4]
    assert(H % grid == 0 and W % grid == 0, ("jigsaw: %dx%d is not a multiple of the %d grid"):format(H, W, grid))
    local ph, pw = H // grid, W // grid
    local patches = {}
    for k = 1, n do
      local r, c = (k - 1) // grid, (k - 1) % grid
      patches[k] = x:narrow(3, r * ph + 1, ph):narrow(4, c * pw + 1, pw)
    end
    local rows = {}
    for r = 0, grid - 1 do
      local row = {}
      for c = 0, grid - 1 do row[#row + 1] = patches[pm[r * grid + c + 1]] end
      rows[#rows + 1] = fdm.cat(row, 4)
    end
    return fdm.cat(rows, 3)
  end
  return view("jigsaw", function(x) return permute(x, perm) end, function(x) return permute(x, inv) end)
end

function D.view_by_name(name)
  if name == "jigsaw" then return D.views.jigsaw(4) end
  local v = D.views[name]
  if type(v) ~= "table" then
    error("diffusion: unknown view '" .. tostring(name) .. "' (identity, flip, rot90, rot180, rot270, negate, jigsaw)", 2)
  end
  return v
end

-- eps = mean_k view_k^-1( cfg_eps(view_k(x), cond_k) ); var from the first
-- entry's conditional pass (mapped back by its view). All passes in one batch.
function D.anagram(model, entries, uncond, g)
  local guided = uncond ~= nil and g ~= nil and g ~= 1
  return function(x, t)
    local jobs = {}
    for _, e in ipairs(entries) do
      local xv = e.view.apply(x)
      jobs[#jobs + 1] = { x = xv, cond = e.cond }
      if guided then jobs[#jobs + 1] = { x = xv, cond = uncond } end
    end
    local r = D.eval_batch(model, jobs, t)
    local eps, var
    local k = 1
    for i, e in ipairs(entries) do
      local ec, ev = r[k][1], r[k][2]
      local ek = ec
      if guided then ek = guide(ec, r[k + 1][1], g); k = k + 2 else k = k + 1 end
      ek = e.view.inverse(ek)
      eps = eps and eps + ek or ek
      if i == 1 and ev then var = e.view.inverse_var(ev) end
    end
    return eps * (1 / #entries), var
  end
end

---------------------------------------------------------------- low-pass filters
-- A hybrid's low-pass filter is a table:
--   {kind = "gaussian", kernel = 33, sigma = 2}  the course's blur, chosen for 64x64 images
--   {kind = "dct", keep = 6}  the orthogonal projection onto the `keep` lowest
--     DCT-II frequencies of each axis. It is exact band splitting:
--     lowpass(x - lowpass(x)) = 0, so the near prompt's band adds nothing to what
--     is seen from afar. A Gaussian passes a quarter of the band around its
--     half-power frequency into both bands, which on 28x28 digits (strokes 2-3
--     pixels wide, the whole digit ~20) is where both digits live.
-- D.hybrid_filter(image_shape) and D.hybrid_isolate(image_shape) are the
-- calibrated defaults for that size (docs/partA.md, "Hybrids on 28x28
-- digits"): from 64 pixels up the course's Gaussian and estimator; below,
-- the DCT projection keeping 6 of every 28 frequencies and isolate "own".
D.HYBRID_DCT_KEEP_PER_28 = 6

local function min_side(image_shape) return math.min(image_shape[#image_shape - 1], image_shape[#image_shape]) end

-- the DCT cutoff calibrated on 28x28 digits, scaled to the image's smaller side
function D.dct_keep_for(image_shape)
  return math.max(1, math.floor(min_side(image_shape) * D.HYBRID_DCT_KEEP_PER_28 / 28 + 0.5))
end

function D.hybrid_filter(image_shape)
  if min_side(image_shape) >= 64 then return D.check_filter { kind = "gaussian" } end
  return { kind = "dct", keep = D.dct_keep_for(image_shape) }
end

function D.hybrid_isolate(image_shape)
  if min_side(image_shape) >= 64 then return nil end
  return "own"
end

function D.filter_name(f)
  if f.kind == "dct" then return ("DCT low-pass, %d lowest frequencies per axis"):format(f.keep) end
  return ("Gaussian k%d s%g"):format(f.kernel, f.sigma)
end

-- check a filter table; returns it with defaults filled in (the Gaussian's:
-- the course's kernel 33, sigma 2)
function D.check_filter(f, level)
  level = (level or 1) + 1
  if type(f) ~= "table" then error("diffusion: a low-pass filter is a table {kind = \"gaussian\" | \"dct\", ...}, got " .. type(f), level) end
  if f.kind == "dct" then
    if math.type(f.keep) ~= "integer" or f.keep < 1 then
      error("diffusion: a DCT low-pass needs keep = a positive integer (frequencies kept per axis), got " .. tostring(f.keep), level)
    end
    return { kind = "dct", keep = f.keep }
  elseif f.kind == "gaussian" or f.kind == nil then
    return { kind = "gaussian", kernel = f.kernel or 33, sigma = f.sigma or 2 }
  end
  error("diffusion: low-pass kind must be \"gaussian\" or \"dct\", got " .. tostring(f.kind), level)
end

-- P = B B^T over the first `keep` orthonormal DCT-II basis vectors of length n
-- (symmetric, P P = P); cached per (n, keep, device)
local dct_cache = {}
local function dct_projector(n, keep, device)
  local key = n .. ":" .. keep .. ":" .. device
  if dct_cache[key] then return dct_cache[key] end
  local rows = {}
  for i = 0, n - 1 do
    local r = {}
    for j = 0, n - 1 do
      local s = 1 / n     -- the constant basis vector, sqrt(1/n)^2
      for f = 1, keep - 1 do
        s = s + 2 / n * math.cos(math.pi * (i + 0.5) * f / n) * math.cos(math.pi * (j + 0.5) * f / n)
      end
      r[j + 1] = s
    end
    rows[i + 1] = r
  end
  dct_cache[key] = fdm.tensor(rows):to(device)
  return dct_cache[key]
end

-- x [N, C, H, W] -> P_H x P_W, each image projected along both axes
local function dct_lowpass(x, keep)
  local shape = x.shape
  if #shape ~= 4 then error(("diffusion.lowpass: expected an image batch [N, C, H, W], got %d dimensions"):format(#shape), 3) end
  local m, h, w = shape[1] * shape[2], shape[3], shape[4]
  if keep > h or keep > w then
    error(("diffusion.lowpass: a DCT low-pass keeping %d frequencies needs images of at least %dx%d, got %dx%d"):format(keep, keep, keep, h, w), 3)
  end
  local y = F.matmul(x:contiguous():reshape(m * h, w), dct_projector(w, keep, x.device))   -- rows
  y = y:reshape(m, h, w):transpose(2, 3):contiguous():reshape(m * w, h)
  y = F.matmul(y, dct_projector(h, keep, x.device))                                       -- columns
  return y:reshape(m, w, h):transpose(2, 3):contiguous():reshape(shape[1], shape[2], h, w)
end

-- D.lowpass(x, filter) with a filter table, or D.lowpass(x, kernel, sigma) for the Gaussian
function D.lowpass(x, kernel, sigma)
  local f = D.check_filter(type(kernel) == "table" and kernel or { kernel = kernel, sigma = sigma }, 2)
  if f.kind == "dct" then return dct_lowpass(x, f.keep) end
  return F.gaussian_blur(x, f.kernel, f.sigma)
end

-- eps = lowpass(eps(x, cond_low)) + highpass(eps(x, cond_high)), each with CFG;
-- highpass = eps - lowpass(eps); var from the low-frequency conditional pass.
-- opts: filter (a low-pass filter table, above), or kernel, sigma (the
-- Gaussian; default the course's k33 s2); cfg_low, cfg_high (a guidance scale per
-- band, default g); low_above (timesteps t >= low_above take the far prompt's
-- whole estimate, so the layout is the far digit's before the bands split);
-- isolate ("far" or "both"): that prompt's pass sees only its own band of x_t,
-- the other band replaced by fresh noise of x_t's level, so it cannot copy the
-- other prompt's strokes into its band; "own": each pass sees its own band of
-- x_t and, for the other band, its own x0 estimate of the previous step
-- noised to t (x_t itself on a run's first step). Each prompt then sees an
-- image of its own digit and draws that digit's strokes, not the other's
-- (on 28x28 digits the near pass otherwise sharpens the far digit's blur
-- into strokes); a run starts again when t does not decrease
-- (docs/partA.md, "Hybrids on 28x28 digits")
function D.hybrid(model, cond_low, cond_high, uncond, g, opts)
  opts = opts or {}
  local filter = D.check_filter(opts.filter or { kernel = opts.kernel, sigma = opts.sigma }, 2)
  local g_low, g_high = opts.cfg_low or g, opts.cfg_high or g
  local low_above, isolate = opts.low_above, opts.isolate
  if isolate ~= nil and isolate ~= "far" and isolate ~= "both" and isolate ~= "own" then
    error("diffusion.hybrid: isolate must be \"far\", \"both\" or \"own\", got " .. tostring(isolate), 2)
  end
  local function lp(v) return D.lowpass(v, filter) end
  local own, last_t = {}, nil   -- isolate "own": each pass's x0 estimate of the previous step
  return function(x, t)
    local guided = uncond ~= nil and ((g_low or 1) ~= 1 or (g_high or 1) ~= 1)
    if low_above and t >= low_above then
      local jobs = { { x = x, cond = cond_low } }
      if guided then jobs[2] = { x = x, cond = uncond } end
      local r = D.eval_batch(model, jobs, t)
      local e1 = r[1][1]
      if guided then e1 = guide(e1, r[2][1], g_low) end
      return e1, r[1][2]
    end
    local x_low, x_high = x, x
    local sch = sched_of(model)
    if isolate == "own" then
      if last_t == nil or t >= last_t then own = {} end   -- a new run
      last_t = t
      local ab = sch:abar(t)
      local a, b = math.sqrt(ab), math.sqrt(1 - ab)
      local lx = lp(x)
      if own.far then
        local o = own.far * a + fdm.randn_like(x) * b
        x_low = lx + o - lp(o)
      end
      if own.near then
        local o = own.near * a + fdm.randn_like(x) * b
        x_high = x - lx + lp(o)
      end
    elseif isolate then
      local level = math.sqrt(1 - sch:abar(t))
      local lx = lp(x)
      local n1 = fdm.randn_like(x) * level
      x_low = lx + n1 - lp(n1)
      if isolate == "both" then
        local n2 = fdm.randn_like(x) * level
        x_high = x - lx + lp(n2)
      end
    end
    local jobs = { { x = x_low, cond = cond_low }, { x = x_high, cond = cond_high } }
    if guided then
      jobs[3] = { x = x_low, cond = uncond }
      if x_high ~= x_low then jobs[4] = { x = x_high, cond = uncond } end
    end
    local r = D.eval_batch(model, jobs, t)
    local e1, e2 = r[1][1], r[2][1]
    if guided then e1, e2 = guide(e1, r[3][1], g_low), guide(e2, (r[4] or r[3])[1], g_high) end
    if isolate == "own" then
      own.far = fdm.clamp(D.x0_from_eps(sch, x_low, t, e1), -1, 1)
      own.near = fdm.clamp(D.x0_from_eps(sch, x_high, t, e2), -1, 1)
    end
    return lp(e1) + e2 - lp(e2), r[1][2]
  end
end

---------------------------------------------------------------- one-step denoising
-- x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t); cond with optional
-- opts.uncond / opts.cfg
function D.one_step_denoise(model, x_t, t, cond, opts)
  opts = opts or {}
  local est = opts.estimator or D.cfg(model, cond, opts.uncond, opts.cfg)
  local eps = fdm.no_grad(function() return est(x_t, t) end)
  return D.x0_from_eps(model, x_t, t, eps), eps
end

---------------------------------------------------------------- the sampler
local Sampler = {}
Sampler.__index = Sampler
D.Sampler_class = Sampler

-- the posterior variance of the step t -> t_next: fixed ("fixed_small":
-- beta (1 - abar_t') / (1 - abar_t); "fixed_large": beta) or IF's learned_range:
-- log var = frac log(beta) + (1 - frac) log(max(fixed_small, 1e-20)), frac = (v + 1) / 2
function D.step_variance(sch, t, t_next, kind, v)
  local ab, abn = sch:abar(t), sch:abar(t_next)
  local beta = 1 - ab / abn
  local small = beta * (1 - abn) / (1 - ab)
  if kind == "fixed_large" then return beta end
  if kind == "learned_range" then
    assert(v, "diffusion: learned_range variance needs the model's var output")
    local frac = (v + 1) * 0.5
    local logv = frac * math.log(beta) + (1 - frac) * math.log(math.max(small, 1e-20))
    return fdm.exp(logv)
  end
  return small
end

function D.Sampler(model, opts)
  opts = opts or {}
  local self = setmetatable({}, Sampler)
  self.model, self.sch = model, sched_of(model)
  self.timesteps = opts.timesteps or D.strided_timesteps { steps = opts.steps, T = self.sch.T }
  self.i = opts.i_start or 0
  assert(self.i >= 0 and self.i < #self.timesteps, ("Sampler: i_start %d outside the %d timesteps"):format(self.i, #self.timesteps))
  self.estimator = opts.estimator or D.cfg(model, opts.cond, opts.uncond, opts.cfg)
  self.add_variance = opts.add_variance ~= false
  self.variance = opts.variance or model.variance
  if opts.clip_x0 ~= nil then self.clip_x0 = opts.clip_x0 else self.clip_x0 = model.clip_x0 end
  local th = opts.threshold
  if th == nil then th = model.threshold end  -- a model's own default (DeepFloyd IF: ratio 0.95, max 1.5 / 1.0)
  if th == true then th = { ratio = 0.995 } end
  self.threshold = th or nil
  self.inpaint = opts.inpaint
  -- a progress bar over the steps (fdm.progress): a description, or the
  -- bar's options; a slow model (DeepFloyd IF) asks for one itself
  self.progress = opts.progress
  if self.progress == nil then self.progress = model.progress end
  self.hooks = {}
  for _, h in ipairs(opts.hooks or {}) do self.hooks[#self.hooks + 1] = h end
  self.t = self.timesteps[self.i + 1]
  if opts.x then
    self.x = opts.x
  else
    local shape = opts.shape or model.image_shape or { 1, 28, 28 }
    local n = opts.n or 1
    self.x = fdm.randn({ n, shape[1], shape[2], shape[3] }, { device = model.device or "cpu" })
  end
  if self.inpaint then
    assert(self.inpaint.x_orig and self.inpaint.mask, "Sampler: inpaint needs {x_orig =, mask =}")
  end
  if opts.graph then   -- graph_step's state; the device check comes before any work
    local g = { device = self.x.device }
    if type(opts.graph) == "table" then for k, v in pairs(opts.graph) do g[k] = v end end
    require("fdm.graph").check(g)
    self._graph = { opts = g }
  end
  return self
end
setmetatable(Sampler, { __call = function(_, ...) return D.Sampler(...) end })

function Sampler:add_hook(fn) self.hooks[#self.hooks + 1] = fn; return self end
function Sampler:done() return self.i >= #self.timesteps - 1 end
function Sampler:steps_left() return #self.timesteps - 1 - self.i end

-- The numbers a step t -> t' uses, computed on the host; the step's tensor
-- work takes them as numbers, or in graph mode as device tensors holding
-- them (a scalar operand is a float32 0-d tensor either way, so both give
-- the same floats)
local function x0_numbers(sch, t, s)
  local ab = sch:abar(t)
  s.eps_scale, s.x0_scale = math.sqrt(1 - ab), 1 / math.sqrt(ab)   -- x0 = (x - eps a) b
  return s
end

local function step_numbers(sch, t, tn)
  local ab, abn = sch:abar(t), sch:abar(tn)
  local alpha = ab / abn
  local beta = 1 - alpha
  local small = beta * (1 - abn) / (1 - ab)
  return x0_numbers(sch, t, {
    t = t,
    c_x0 = math.sqrt(abn) * beta / (1 - ab), c_x = math.sqrt(alpha) * (1 - abn) / (1 - ab),
    noise_small = math.sqrt(small), noise_large = math.sqrt(beta),        -- D.step_variance's kinds
    log_beta = math.log(beta), log_small = math.log(math.max(small, 1e-20)),
    known_x = math.sqrt(abn), known_noise = math.sqrt(1 - abn),          -- D.forward(x_orig, t')
  })
end

local function predict(self, x, eps, s)
  local x0 = (x - eps * s.eps_scale) * s.x0_scale
  if self.threshold then
    x0 = D.threshold(x0, self.threshold.ratio, self.threshold.max)
  elseif self.clip_x0 then
    x0 = fdm.clamp(x0, -1, 1)
  end
  return x0
end

function Sampler:predict_x0(eps) return predict(self, self.x, eps, x0_numbers(self.sch, self.t, {})) end

-- the tensor work of one step from x: returns x', x0_hat, eps. clean: the
-- step goes to t' < 0, the clean image (abar 1): x' is x0_hat and no noise is
-- added, as diffusers' step() does at t = 0 (lists ending in -1: the
-- deepfloyd scheduler's pipeline_timesteps)
local function step_work(self, x, s, last, clean)
  local eps, v = fdm.no_grad(function() return self.estimator(x, s.t) end)
  local x0 = predict(self, x, eps, s)
  local xn = x0 * s.c_x0 + x * s.c_x
  if self.add_variance and not clean then
    local kind = self.variance
    if v ~= nil and kind == nil then kind = "learned_range" end
    if kind == "learned_range" then
      assert(v, "diffusion: learned_range variance needs the model's var output")
      local frac = (v + 1) * 0.5
      local var = fdm.exp(frac * s.log_beta + (1 - frac) * s.log_small)
      xn = xn + fdm.randn_like(xn) * fdm.sqrt(var)
    else
      xn = xn + fdm.randn_like(xn) * (kind == "fixed_large" and s.noise_large or s.noise_small)
    end
  end
  if self.inpaint then
    local m, xo = self.inpaint.mask, self.inpaint.x_orig
    -- known pixels: the original noised to t' (the original itself after the last step)
    local known = last and xo or xo * s.known_x + fdm.randn_like(xo) * s.known_noise
    xn = xn * m + known * (1 - m)
  end
  return xn, x0, eps
end

-- Graph mode (opts.graph): the step's numbers go to device tensors (t as
-- int64 [1]) before each step; the first step runs eagerly with them, the
-- second is captured into a graph that reads x from one tensor and writes
-- x' back into it, the others replay it. A step to the clean image
-- (t' < 0) and the last step of an inpainting run (other work) run eagerly.
local function graph_step(self, s, last, clean)
  -- the step to the clean image adds no noise: other work than the graph's, so eager
  if clean then return step_work(self, self.x, s, last, true) end
  local G = self._graph
  if not G.vals then
    G.vals = {}
    for k in pairs(s) do
      G.vals[k] = k == "t" and fdm.zeros({ 1 }, { dtype = "int64", device = self.x.device })
                 or fdm.zeros({}, { device = self.x.device })
    end
  end
  for k, v in pairs(s) do G.vals[k]:fill_(v) end
  if not G.warm or (last and self.inpaint) then
    G.warm = true
    return step_work(self, self.x, G.vals, last)
  end
  if not G.g then
    G.x = self.x:clone()
    local xs, vals = G.x, G.vals
    local g, _, x0, eps = fdm.graph(function()
      local xn, x0_hat, e = step_work(self, xs, vals, false)
      xs:copy_(xn)
      return xs, x0_hat, e
    end, G.opts)
    G.g, G.x0, G.eps = g, x0, eps
  else
    if self.x ~= G.x then G.x:copy_(self.x) end   -- a hook replaced x
    G.g:replay()
  end
  return G.x, G.x0, G.eps
end

-- one strided step x_t -> x_t' (t' the next entry); returns the new x
function Sampler:step()
  if self:done() then return self.x end
  local t, tn = self.t, self.timesteps[self.i + 2]
  local last = self.i + 1 >= #self.timesteps - 1
  local s = step_numbers(self.sch, t, tn)
  local clean = tn < 0
  local x, x0, eps
  if self._graph then x, x0, eps = graph_step(self, s, last, clean)
  else x, x0, eps = step_work(self, self.x, s, last, clean) end
  self.i = self.i + 1
  self.t = tn
  if last and self._graph and self._graph.g then self._graph.g:free(); self._graph.g = nil end
  self.x, self.x0_hat, self.eps = x, x0, eps
  for _, h in ipairs(self.hooks) do
    local r = h(self, { i = self.i, t = tn, t_prev = t, x = x, x0_hat = x0, eps = eps, last = last })
    if r ~= nil then self.x = r end
  end
  return self.x
end

local function progress_bar(self, n)
  local p = self.progress
  if not p or self:done() then return nil end
  local o = { desc = "sampling", unit = "step" }
  if type(p) == "string" then o.desc = p elseif type(p) == "table" then for k, v in pairs(p) do o[k] = v end end
  o.total = n and math.min(n, self:steps_left()) or self:steps_left()
  return require("fdm.progress").bar(o)
end

-- runs to the end (or n steps); returns x
function Sampler:run(n)
  local k = 0
  local bar <close> = progress_bar(self, n)   -- closed on an error too, which keeps its traceback
  fdm.no_grad(function()
    while not self:done() and (n == nil or k < n) do
      self:step()
      k = k + 1
      if bar then bar:update(1) end
    end
  end)
  return self.x
end

-- records x (a clone) at the start and every `every` steps (and at the end);
-- returns the list of frames it fills and the list of their timesteps
function Sampler:record(every)
  every = every or 1
  local frames, labels = { self.x:clone() }, { self.t }
  self:add_hook(function(s, ev)
    if ev.i % every == 0 or ev.last then
      frames[#frames + 1] = s.x:clone()
      labels[#labels + 1] = ev.t
    end
  end)
  return frames, labels
end

---------------------------------------------------------------- conveniences
-- denoise x (at timesteps[i_start]) to the end of the list
function D.iterative_denoise(model, x, opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.x = x
  return D.Sampler(model, o):run()
end

-- n samples from pure noise (i_start = 0)
function D.sample(model, n, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.n, o.i_start, o.x = n, o.i_start or 0, o.x
  return D.Sampler(model, o):run()
end

-- SDEdit: noise x_orig to timesteps[i_start], denoise (with CFG when given)
function D.sdedit(model, x_orig, i_start, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local ts = o.timesteps or D.strided_timesteps { steps = o.steps, T = sched_of(model).T }
  o.timesteps, o.i_start = ts, i_start
  o.x = D.forward(model, x_orig, ts[i_start + 1])
  return D.Sampler(model, o):run()
end

-- RePaint-style inpainting from pure noise: mask = 1 where new content goes
function D.inpaint(model, x_orig, mask, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.inpaint = { x_orig = x_orig, mask = mask }
  o.x = o.x or fdm.randn_like(x_orig)
  o.i_start = o.i_start or 0
  return D.Sampler(model, o):run()
end

return D
