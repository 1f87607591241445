-- fdm.ddpm_model: the model interface of Part A and the shipped model, a
-- class-conditioned epsilon-prediction DDPM on MNIST (the Part B UNet family,
-- fdm.unet.ClassConditionalUNet: time and class conditioning, time input t/T)
-- with DeepFloyd IF's cosine schedule (squaredcos_cap_v2, T = 1000).
--
--   local M = require "fdm.ddpm_model"
--   local model = M.load()                     -- weights/ddpm_mnist.safetensors (eval mode)
--   local model = M.load(path, {device = "cuda"})
--   local model = M.new{hidden = 64}           -- randomly initialised (training, tests)
--   local c = model:encode("the digit seven")  -- cond [1, 10]; "" -> unconditional (zeros)
--   local eps = model(x_t, t, c)               -- x_t [N,1,28,28] in model space [-1, 1]
--   M.to_model(x01), M.from_model(x)           -- [0,1] <-> [-1,1]
--   M.loss(model, x01, labels, {p_uncond = 0.1}) -- the training objective
--   model.net                                  -- the fdm.nn module (train/eval, state_dict)
--
-- The interface every Part A algorithm (fdm.diffusion) uses, which a wrapper
-- of DeepFloyd IF (64x64 RGB, T5 embeddings [1,77,4096], learned_range) can
-- provide as well:
--   eps, var = model(x_t, t, cond)   t: integer timestep (number or int64 [N]);
--                                    var absent (fixed variance) or the raw v in [-1,1]
--   model:encode(prompt) -> cond     conditions are tensors with batch dim 1 or N
--   model.schedule                   a diffusion.Schedule
--   model.image_shape, model.device, model.variance ("fixed_small" | "learned_range"),
--   model.clip_x0 (the samplers' default for clamping x0_hat to [-1, 1]),
--   model.prompts                    a description of the prompts it accepts
--
-- Prompts: "7", "a 7", "seven", "the digit seven", "digit 7", "the number 7",
-- "a handwritten 7" ... (case and punctuation ignored); "" (and "a digit",
-- "any digit", "a handwritten digit") is the unconditional prompt. Anything
-- else raises an error that lists the valid prompts.
local fdm = require "fdm"
local D = require "fdm.diffusion"
local unet = require "fdm.unet"
local flow = require "fdm.flow"
local W = require "fdm.weights"

local M = {}

M.DEFAULT_WEIGHTS = "weights/ddpm_mnist.safetensors"
M.NUM_CLASSES = 10
M.WORDS = { "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine" }

---------------------------------------------------------------- prompts
local UNCOND = { [""] = true, ["digit"] = true, ["any digit"] = true, ["handwritten digit"] = true,
  ["number"] = true, ["any number"] = true }
local PREFIXES = { "an image of ", "a picture of ", "a photo of ", "the ", "a ", "an ", "handwritten ",
  "hand written ", "digit ", "number ", "numeral " }

M.VALID_PROMPTS = '"" (unconditional; also "a digit", "a handwritten digit"), ' ..
  '"0".."9", "zero".."nine", optionally after "a", "the digit", "digit", "the number", ' ..
  '"a handwritten" (e.g. "7", "a 7", "seven", "the digit seven")'

-- -> class id 0..9, or -1 for the unconditional prompt; nil, message when unknown
function M.parse_prompt(prompt)
  if type(prompt) ~= "string" then return nil, "a prompt must be a string" end
  local s = prompt:lower():gsub("[%p]", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  local changed = true
  while changed do
    changed = false
    if UNCOND[s] then return -1 end
    for _, p in ipairs(PREFIXES) do
      if s:sub(1, #p) == p then s = s:sub(#p + 1); changed = true end
    end
  end
  if UNCOND[s] then return -1 end
  if s:match("^%d$") then return tonumber(s) end
  for i, w in ipairs(M.WORDS) do if s == w then return i - 1 end end
  return nil, ("unknown prompt '%s'; valid prompts: %s"):format(prompt, M.VALID_PROMPTS)
end

-- a short caption for a prompt: '"seven" (7)'
function M.describe_prompt(prompt)
  local c = M.parse_prompt(prompt)
  if c == nil then return prompt end
  if c < 0 then return prompt == "" and "(unconditional)" or ('"' .. prompt .. '" (uncond)') end
  if prompt == tostring(c) then return prompt end
  return ('"%s" (%d)'):format(prompt, c)
end

---------------------------------------------------------------- the model object
local Model = {}
Model.__index = Model
M.Model = Model

-- time input t/T; cond [1 or N, 10] one-hot (zeros = unconditional)
Model.__call = function(self, x, t, cond)
  local n = x.shape[1]
  local tt
  if type(t) == "number" then
    tt = fdm.full({ n }, t / self.T, { device = x.device })
  else
    tt = t:float() / self.T
    if tt:numel() == 1 and n > 1 then tt = tt:reshape(1):expand(n) end
  end
  if cond == nil then cond = self:encode("") end
  if cond.shape[1] ~= n then cond = cond:expand(n, cond.shape[2]) end
  return fdm.autocast(self.autocast, function() return self.net(x, cond, tt) end)
end

-- "fp32", "bf16" or "fp16": the dtype of the convolutions' and matrix
-- products' operands in each call (fdm.autocast; float32 sums)
function Model:set_precision(precision)
  self.autocast = require("fdm.cli").autocast_of(precision)
  self.precision = precision or "fp32"
  return self
end

function Model:encode(prompt)
  local c, err = M.parse_prompt(prompt)
  if c == nil then error(err, 2) end
  local v = fdm.zeros(1, M.NUM_CLASSES, { device = self.device })
  if c >= 0 then v = fdm.F.one_hot(fdm.tensor({ c }, { dtype = "int64" }), M.NUM_CLASSES):float():to(self.device) end
  return v
end

-- the class id of a prompt (-1 unconditional); raises on unknown prompts
function Model:class_of(prompt)
  local c, err = M.parse_prompt(prompt)
  if c == nil then error(err, 2) end
  return c
end

function Model:eval() self.net:eval(); return self end
function Model:train(b) self.net:train(b); return self end

-- wraps a ClassConditionalUNet (or any net(x, c, t/T) -> eps)
function M.wrap(net, opts)
  opts = opts or {}
  local self = setmetatable({}, Model)
  self.net = net
  self.schedule = opts.schedule or D.Schedule { kind = opts.schedule_kind or "cosine", T = opts.T or 1000 }
  self.T = self.schedule.T
  self.hidden = opts.hidden or net.num_hiddens
  self.device = opts.device or "cpu"
  self.image_shape = { 1, 28, 28 }
  self.variance = "fixed_small"
  self.clip_x0 = opts.clip_x0 ~= false
  self.prompts = M.VALID_PROMPTS
  self.name = opts.name or "ddpm_mnist"
  self.meta = opts.meta or {}
  return self
end

function M.new(opts)
  opts = opts or {}
  local net = unet.ClassConditionalUNet(1, opts.hidden or 64, M.NUM_CLASSES)
  if opts.device and opts.device ~= "cpu" then net:to(opts.device) end
  return M.wrap(net, opts)
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close(); return true end
  return false
end
M.exists = exists

M.HOW_TO_TRAIN = "train it with `fdm scripts/train_ddpm.lua` (see docs/partA.md), " ..
  "or pass --model PATH"

-- loads weights written by scripts/train_ddpm.lua (a model file or a training
-- checkpoint), or a foreign file (PyTorch export) whose tensor names and
-- shapes are the ClassConditionalUNet's; the width D is read from the
-- metadata or the tensors. A missing file, an fdm file of another kind or a
-- mismatching one is a usage error. Eval mode. opts.what names the option
-- that gave the path (for messages), opts.device, opts.precision ("fp32",
-- "bf16", "fp16": Model:set_precision).
function M.load(path, opts)
  opts = opts or {}
  path = path or M.DEFAULT_WEIGHTS
  local tensors, meta, _, resolved = W.read(path, { kind = "ddpm", what = opts.what or "ddpm_model",
    user = "the DDPM loader (fdm.ddpm_model)", hint = M.HOW_TO_TRAIN })
  path = resolved
  if meta["fdm.checkpoint"] then
    local sd = {}
    for k, v in pairs(tensors) do
      local kk = k:match("^model%.(.+)$")
      if kk then sd[kk] = v end
    end
    tensors = sd
  end
  local w = tensors["in_block.net.0.net.0.weight"]
  local hidden = tonumber(meta["fdm.hidden"] or "") or (w and w.shape[1]) or 64
  local kind = meta.schedule or meta["meta.schedule"] or "cosine"
  local T = tonumber(meta.T or meta["meta.T"] or 1000)
  local model = M.new { hidden = hidden, schedule_kind = kind, T = T, meta = meta, name = path }
  W.check_state(path, tensors, model.net:state_dict(),
    ("ClassConditionalUNet(1, %d, %d)"):format(hidden, M.NUM_CLASSES), opts.what)
  model.net:load_state_dict(tensors)
  if opts.device and opts.device ~= "cpu" then model.net:to(opts.device); model.device = opts.device end
  model:set_precision(opts.precision)
  model.net:eval()
  model.path = path
  return model
end

-- the fdm.* metadata of a DDPM weight file (fdm.weights)
function M.weight_metadata(model)
  return W.metadata("ddpm", "ClassConditionalUNet",
    { in_channels = 1, hidden = model.hidden, num_classes = M.NUM_CLASSES })
end

-- saves the net's weights with the metadata load() reads back
function M.save(model, path, meta)
  local m = { format = "pt", model = "ClassConditionalUNet", schedule = model.schedule.kind,
    T = tostring(model.T), hidden = tostring(model.hidden), prediction = "epsilon", time_input = "t/T" }
  for k, v in pairs(M.weight_metadata(model)) do m[k] = v end
  for k, v in pairs(meta or {}) do m[k] = tostring(v) end
  local out = {}
  for k, v in pairs(model.net:state_dict()) do
    if v.device ~= "cpu" then v = v:to("cpu") end
    out[k] = v:contiguous()
  end
  fdm.io.save_safetensors(path, out, m)
  return path
end

---------------------------------------------------------------- data scaling
function M.to_model(x01) return x01 * 2 - 1 end
function M.from_model(x) return fdm.clamp((x + 1) * 0.5, 0, 1) end

---------------------------------------------------------------- training objective
-- alphas_cumprod[t] for int64 t [N] on t's device, as [N,1,1,1]: a sum over
-- a one-hot row (exact: one term is not zero), so nothing is read on the
-- host (index_select checks its indices there) and a CUDA graph can capture it
local function abar_at(model, t)
  local dev, n = t.device, t:numel()
  local cache = model._abar_on or {}
  model._abar_on = cache
  local abar = cache[dev]
  if abar == nil then
    abar = model.schedule.alphas_cumprod:to(dev)
    cache[dev] = abar
  end
  local rows = fdm.eq(t:reshape(n, 1), fdm.arange(model.T, { device = dev })):float()
  return (rows * abar):sum(2):reshape(n, 1, 1, 1)
end

-- x01 [N,1,28,28] in [0,1], labels int64 [N]: t ~ U{0..T-1}, x_t = forward(x0, t),
-- L2(eps_hat(x_t, t, c), eps) with c zeroed with probability p_uncond (CFG).
-- Everything is drawn and computed on x01's device (the draws are the
-- CPU's numbers on any device), so fdm.graph_step can capture it.
function M.loss(model, x01, labels, opts)
  opts = opts or {}
  local n = x01.shape[1]
  local dev = x01.device
  local x0 = M.to_model(x01)
  local t = fdm.randint(0, model.T, { n }, { device = dev })
  local ab = abar_at(model, t)
  local eps = fdm.randn_like(x0)
  local x_t = x0 * fdm.sqrt(ab) + eps * fdm.sqrt(1 - ab)
  if labels.device ~= dev then labels = labels:to(dev) end
  local c = flow.one_hot(labels, M.NUM_CLASSES)
  local mask = unet.class_dropout_mask(n, opts.p_uncond or 0.1, dev)
  local pred = model.net(x_t, c, t:float() / model.T, mask)
  return fdm.F.mse_loss(pred, eps)
end

return M
