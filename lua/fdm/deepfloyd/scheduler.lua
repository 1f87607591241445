-- fdm.deepfloyd.scheduler: diffusers' DDPMScheduler (0.21.4) as DeepFloyd IF
-- configures it (squaredcos_cap_v2 betas, learned_range variance, dynamic
-- thresholding, epsilon prediction), with its float32 values, stepping at any
-- list of timesteps.
--
--   local S = require "fdm.deepfloyd.scheduler"
--   local s = S.load(dir)  or  S.new(cfg)       -- DIR/scheduler_config.json
--   s.betas, s.alphas, s.alphas_cumprod         -- float32 [T]
--   s:set_timesteps(list)                       -- any descending list (default: the course's 990, 960, ..., 0)
--   s:previous_timestep(t)                      -- the next entry, -1 after the last
--   s:pipeline_timesteps(n)                     -- IFPipeline's n timesteps (set_timesteps(n): the config's
--                                               -- timestep_spacing and steps_offset), then -1: the list
--                                               -- fdm.diffusion's samplers step through to the clean image
--   s:variance(t, v)                            -- learned_range log variance for predicted v in [-1, 1]
--   s:threshold(x0)                             -- dynamic thresholding (ratio, sample_max_value)
--   s:step(model_output, t, sample, noise)      -- prev_sample, pred_original_sample
--   s:add_noise(x0, noise, t)                   -- sqrt(abar) x0 + sqrt(1 - abar) noise
--   s:schedule()                                -- a fdm.diffusion Schedule over the same alphas_cumprod
--                                               -- (what the Part A samplers step with)
local fdm = require "fdm"
local D = require "fdm.diffusion"
local L = require "fdm.deepfloyd.loader"

local S = {}
S.__index = S

local f32 = function(x) return (string.unpack("<f", string.pack("<f", x))) end
S.f32 = f32

local DEFAULTS = {
  num_train_timesteps = 1000, beta_schedule = "squaredcos_cap_v2", beta_start = 0.0001, beta_end = 0.02,
  variance_type = "learned_range", prediction_type = "epsilon", thresholding = true,
  dynamic_thresholding_ratio = 0.95, sample_max_value = 1.5, clip_sample = true, clip_sample_range = 1.0,
}

function S.new(cfg)
  cfg = cfg or {}
  local c = {}
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(cfg) do if not L.is_null(v) then c[k] = v end end
  if c.prediction_type ~= "epsilon" then error(("scheduler: prediction_type '%s' is not supported (epsilon)"):format(c.prediction_type), 0) end
  local vt = c.variance_type
  if vt ~= "learned_range" and vt ~= "fixed_small" and vt ~= "fixed_large" then
    error(("scheduler: variance_type '%s' is not supported (learned_range, fixed_small, fixed_large)"):format(vt), 0)
  end
  local W = "scheduler"
  -- diffusers' own schedules have 1000 steps; a config far beyond that is a broken file, not a model
  L.config_int(c.num_train_timesteps, W, "num_train_timesteps", 2, 100000)
  L.config_number(c.dynamic_thresholding_ratio, W, "dynamic_thresholding_ratio", 0, 1)
  L.config_positive(c.sample_max_value, W, "sample_max_value")
  L.config_positive(c.clip_sample_range, W, "clip_sample_range")
  if c.beta_schedule == "linear" then
    L.config_number(c.beta_start, W, "beta_start", 0, 1)
    L.config_number(c.beta_end, W, "beta_end", 0, 1)
  end
  if c.steps_offset ~= nil then L.config_int(c.steps_offset, W, "steps_offset", 0) end
  for _, k in ipairs { "thresholding", "clip_sample" } do
    if type(c[k]) ~= "boolean" then error(("scheduler: %s must be true or false, got %s"):format(k, tostring(c[k])), 0) end
  end
  local self = setmetatable({ config = c }, S)
  local T = c.num_train_timesteps
  self.T = T
  -- betas in Python floats, then float32 (torch.tensor(betas, dtype=float32))
  local betas = {}
  if c.beta_schedule == "squaredcos_cap_v2" then
    betas = D.betas("squaredcos_cap_v2", T)
  elseif c.beta_schedule == "linear" then
    betas = D.betas("linear", T, { beta_start = c.beta_start, beta_end = c.beta_end })
  else
    error(("scheduler: beta_schedule '%s' is not supported (squaredcos_cap_v2, linear)"):format(c.beta_schedule), 0)
  end
  local b32, a32, acp = {}, {}, {}
  local p = 1.0
  for i = 1, T do
    b32[i] = f32(betas[i])
    a32[i] = f32(1 - b32[i])
    p = p * a32[i]             -- torch.cumprod on the CPU accumulates float32 in double
    acp[i] = f32(p)
  end
  self.betas_list, self.alphas_list, self.acp_list = b32, a32, acp
  self.betas, self.alphas, self.alphas_cumprod = fdm.tensor(b32), fdm.tensor(a32), fdm.tensor(acp)
  self:set_timesteps(D.strided_timesteps { T = T })
  return self
end

function S.load(dir)
  local path = dir .. "/scheduler_config.json"
  if not L.exists(path) then error(("scheduler: missing file '%s'"):format(path), 0) end
  local s = S.new(L.read_json(path, "scheduler"))
  s.dir = dir
  return s
end

function S:set_timesteps(list)
  for i = 2, #list do
    if list[i] >= list[i - 1] then error("scheduler: timesteps must be in descending order", 2) end
  end
  if list[1] >= self.T or list[#list] < 0 then error(("scheduler: timesteps must lie in [0, %d)"):format(self.T), 2) end
  self.timesteps = list
  self.prev = {}
  for i, t in ipairs(list) do self.prev[t] = list[i + 1] or -1 end
end

-- DDPMScheduler.set_timesteps(n) of diffusers 0.21: "leading" (the default,
-- and what IF's configs get), "trailing" or "linspace" spacing, plus
-- steps_offset. The trailing -1 is the step after the last timestep, to
-- alphas_cumprod = 1 and without noise, as diffusers' step() takes it.
local function round_half_even(x)   -- np.round
  local f = math.floor(x)
  local d = x - f
  if d > 0.5 or (d == 0.5 and f % 2 == 1) then f = f + 1 end
  return math.tointeger(f)
end

function S:pipeline_timesteps(n)
  local T, c = self.T, self.config
  n = math.tointeger(n)
  if not n or n < 1 or n > T then error(("scheduler: %s inference steps (1 to %d expected)"):format(tostring(n), T), 2) end
  local spacing = c.timestep_spacing or "leading"
  local ts = {}
  if spacing == "leading" then
    local ratio = T // n
    for i = n - 1, 0, -1 do ts[#ts + 1] = i * ratio + (c.steps_offset or 0) end
  elseif spacing == "trailing" then
    local ratio = T / n
    for i = 0, n - 1 do ts[#ts + 1] = round_half_even(T - i * ratio) - 1 end
  elseif spacing == "linspace" then
    for i = n - 1, 0, -1 do ts[#ts + 1] = round_half_even(n == 1 and 0 or i * (T - 1) / (n - 1)) end
  else
    error(("scheduler: timestep_spacing '%s' is not supported (leading, trailing, linspace)"):format(spacing), 2)
  end
  ts[#ts + 1] = -1
  return ts
end

function S:previous_timestep(t)
  local p = self.prev[t]
  if p == nil then error(("scheduler: timestep %d is not in the list"):format(t), 2) end
  return p
end

function S:abar(t)
  if t < 0 then return 1.0 end
  return self.acp_list[t + 1]
end

-- diffusers _get_variance in float32: learned_range log variance (a tensor)
-- or the fixed variance (a number)
function S:variance(t, v, kind, t_prev)
  local prev = t_prev or self:previous_timestep(t)
  local ab, abp = self:abar(t), self:abar(prev)
  local beta = f32(1 - f32(ab / abp))
  local var = f32(f32(f32(1 - abp) / f32(1 - ab)) * beta)
  var = math.max(var, 1e-20)
  kind = kind or self.config.variance_type
  if kind == "learned_range" then
    local min_log, max_log = f32(math.log(var)), f32(math.log(beta))
    local frac = (v + 1) * 0.5
    return frac * max_log + (frac * -1 + 1) * min_log
  elseif kind == "fixed_large" then
    return beta
  end
  return var
end

function S:threshold(x0, max)
  return D.threshold(x0, self.config.dynamic_thresholding_ratio, max or self.config.sample_max_value)
end

-- one DDPM step at t (to previous_timestep(t)); noise: a tensor like sample
-- (drawn when nil and t > 0). Returns prev_sample, pred_original_sample.
function S:step(model_output, t, sample, noise, opts)
  opts = opts or {}
  local C = sample.shape[2]
  local eps, pv = model_output, nil
  if model_output.shape[2] == 2 * C and self.config.variance_type:match("^learned") then
    eps, pv = model_output:narrow(2, 1, C), model_output:narrow(2, C + 1, C)
  end
  local prev = opts.t_prev or self:previous_timestep(t)
  local ab, abp = self:abar(t), self:abar(prev)
  local bt, btp = f32(1 - ab), f32(1 - abp)
  local cur_alpha = f32(ab / abp)
  local cur_beta = f32(1 - cur_alpha)
  local x0 = (sample - eps * f32(math.sqrt(bt))) / f32(math.sqrt(ab))
  if self.config.thresholding then
    x0 = self:threshold(x0, opts.max)
  elseif self.config.clip_sample then
    local r = self.config.clip_sample_range
    x0 = fdm.clamp(x0, -r, r)
  end
  local c0 = f32(f32(f32(math.sqrt(abp)) * cur_beta) / bt)
  local ct = f32(f32(f32(math.sqrt(cur_alpha)) * btp) / bt)
  local x = x0 * c0 + sample * ct
  if t > 0 then
    noise = noise or fdm.randn_like(sample)
    if self.config.variance_type == "learned_range" then
      local logv = self:variance(t, pv, "learned_range", prev)
      x = x + fdm.exp(logv * 0.5) * noise
    else
      x = x + noise * math.sqrt(self:variance(t, nil, nil, prev))
    end
  end
  return x, x0
end

function S:add_noise(x0, noise, t)
  local ab = self:abar(t)
  return x0 * f32(math.sqrt(ab)) + noise * f32(math.sqrt(f32(1 - ab)))
end

-- a fdm.diffusion Schedule over these float32 alphas_cumprod
function S:schedule()
  local sch = D.Schedule { kind = self.config.beta_schedule, T = self.T }
  sch.abar_list = {}
  for i = 1, self.T do sch.abar_list[i] = self.acp_list[i] end
  sch.alphas_cumprod = self.alphas_cumprod
  sch.betas = self.betas
  sch.betas_list = self.betas_list
  return sch
end

return S
