-- fdm.deepfloyd: DeepFloyd IF behind the Part A model interface (docs/partA.md)
--
--   local IF = require "fdm.deepfloyd"
--   local m1 = IF.load("~/IF-I-M-v1.0")            -- stage I: unet/, scheduler/, text_encoder/, tokenizer/
--                                                  -- (opts.stage = 1 or 2: refuse the other stage clearly)
--   local m2 = IF.load("~/IF-II-M-v1.0", {text_model = m1})   -- stage II (takes stage I's embeddings)
--   local c = m1:encode("a lithograph of waterfalls")  -- [1, 77, D] (cached on disk by prompt and model)
--   local eps, var = m1(x_t, t, c)                 -- the Part A interface: eps and the raw learned_range v
--   local x = D.sample(m1, 1, {cond = c, uncond = m1:encode(""), cfg = 7, steps = 20})
--   local y = IF.upscale(m2, x, c, m1:encode(""), {steps = 50, cfg = 4, noise_level = 250})
--   m1:free_text_encoder()                         -- drop T5 once the prompts are embedded
--   m1:to("cuda"); m2:to("cuda")                   -- UNet, T5 (now or when loaded) and embeddings on a device
--
-- A folder is the published layout (model_index.json, unet/, scheduler/,
-- text_encoder/, tokenizer/, stage II: image_noising_scheduler/, no
-- text_encoder/), or the tiny test layout where stage I and II share the
-- scheduler/, text_encoder/ and tokenizer/ of the parent folder. A prompt of
-- the form "@file.safetensors" loads embeddings made elsewhere (the tensor
-- "prompt_embeds", or the file's only tensor; [77, D] or [1, 77, D]).
local fdm = require "fdm"
local D = require "fdm.diffusion"
local L = require "fdm.deepfloyd.loader"
local U = require "fdm.deepfloyd.unet"
local S = require "fdm.deepfloyd.scheduler"

local IF = {}
IF.loader, IF.unet, IF.scheduler = L, U, S

local function expand_home(p)
  if p:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. p:sub(2) end
  return p
end

local function isdir(p) return L.exists(p .. "/.") or L.exists(p .. "/config.json") end

-- the model folder a user names: a folder (its unet/ sub-folder names the
-- folder above it), or a model id that diffusers downloaded into the Hugging
-- Face cache. fdm itself never downloads.
function IF.resolve(name)
  local dir = expand_home(name)
  if isdir(dir) then
    local above = dir:match("^(.*)/unet/*$")
    if above and L.exists(dir .. "/config.json") and not L.exists(dir .. "/unet/config.json") then
      return above ~= "" and above or "/"
    end
    return dir
  end
  local id = L.hub_id(dir)
  if id then
    local snap, _, why = L.hub_snapshot(id)
    if snap then return snap end
    error(("deepfloyd: '%s' is neither a folder nor in the Hugging Face cache (%s). " ..
      "fdm does not download: accept the licence on huggingface.co/%s/%s, run `huggingface-cli download %s/%s`, " ..
      "then pass the id again or the folder it printed"):format(name, why, id.org, id.repo, id.org, id.repo), 0)
  end
  error(("deepfloyd: no folder '%s'"):format(dir), 0)
end

-- sub-folder `name` of dir, or of its parent (tiny layout)
local function find_sub(dir, name, file)
  for _, d in ipairs { dir .. "/" .. name, dir .. "/../" .. name } do
    if L.exists(d .. "/" .. file) then return d end
  end
  return nil
end
IF.find_sub = find_sub

local function file_size(p)
  local f = io.open(p, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- FNV-1a 64-bit, hex
local function fnv(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = h * 0x100000001b3
  end
  return ("%016x"):format(h)
end
IF.hash = fnv

function IF.cache_dir()
  local d = os.getenv("FDM_CACHE")
  if d and d ~= "" then return d end
  local x = os.getenv("XDG_CACHE_HOME")
  if x and x ~= "" then return x .. "/fdm" end
  return (os.getenv("HOME") or "/tmp") .. "/.cache/fdm"
end

local Model = {}
Model.__index = Model
IF.Model = Model

-- eps, var = model(x_t, t, cond); stage II: the noisy upscaled image and its
-- noise level come from model.low_res / model.noise_level (set by IF.upscale)
-- cond: embeddings from model:encode, a prompt (encoded here, cached), or nil for the unconditional ""
Model.__call = function(self, x, t, cond)
  if cond == nil then cond = self:encode("") elseif type(cond) == "string" then cond = self:encode(cond) end
  if not fdm.is_tensor(x) then error(("deepfloyd: the image x_t must be a tensor, got %s"):format(type(x)), 2) end
  if type(t) ~= "number" and not fdm.is_tensor(t) then
    error(("deepfloyd: the timestep must be a number or a tensor, got %s"):format(type(t)), 2)
  end
  if not fdm.is_tensor(cond) then
    error(("deepfloyd: cond must be prompt embeddings (model:encode(prompt)), a prompt or nil, got %s"):format(type(cond)), 2)
  end
  local n = x.shape[1]
  -- a timestep tensor on a device stays there (a sampler in graph mode: the UNet computes its sinusoid there)
  if type(t) ~= "number" and t.device == "cpu" and t:numel() == 1 then t = t:reshape(1):tolist()[1] end
  -- the UNet runs on the model's device; the results go back to the device of
  -- x, so a caller whose images are on the CPU (a Part A script's own image)
  -- still gets CPU tensors (sampling from noise drawn on model.device: no copy)
  local xdev = x.device
  x, cond = self:on_device(x), self:on_device(cond)
  local input, labels = x, nil
  if self.stage == 2 then
    local lr = self.low_res
    if lr == nil then error("deepfloyd: a stage II model needs model.low_res (use deepfloyd.upscale)", 2) end
    lr = self:on_device(lr)
    if lr.shape[1] ~= n then
      if n % lr.shape[1] ~= 0 then error("deepfloyd: low_res batch does not divide the batch", 2) end
      local rep = {}
      for i = 1, n // lr.shape[1] do rep[i] = lr end
      lr = fdm.cat(rep, 1)
    end
    input = fdm.cat({ x, lr }, 2)
    labels = self.noise_level or 250
  end
  local out = fdm.no_grad(function()
    return fdm.autocast(self.autocast, function() return self.net(input, t, cond, labels) end)
  end)
  if xdev ~= self.device then out = out:to(xdev) end
  local C = x.shape[2]
  if out.shape[2] == 2 * C then
    return out:narrow(2, 1, C), out:narrow(2, C + 1, C)
  end
  return out
end

-- the folders of the text encoder and of its tokenizer (nil where there is none)
function Model:text_folders()
  return self.text_dir or find_sub(self.dir, "text_encoder", "config.json"),
    self.tok_dir or find_sub(self.dir, "tokenizer", "spiece.model")
end

function Model:text_encoder()
  if self.text_model and self.text_model ~= self then return self.text_model:text_encoder() end
  if self.t5 then return self.t5, self.tok end
  local T5 = require "fdm.deepfloyd.t5"
  local Tok = require "fdm.deepfloyd.tokenizer"
  local tdir, kdir = self:text_folders()
  if not tdir then
    error(("deepfloyd: '%s' has no text_encoder/ (a stage II folder: pass the stage I model, or embeddings as @file.safetensors)")
      :format(self.dir), 0)
  end
  if not kdir then error(("deepfloyd: '%s' has no tokenizer/spiece.model"):format(self.dir), 0) end
  local function total(list)
    local b = 0
    for _, f in ipairs(list or {}) do b = b + file_size(f) end
    return b
  end
  local variant = self.variant
  local files = L.weight_files(tdir, "model", variant)
  local avail = L.mem_available()
  if not variant and avail and total(files) > 0.8 * avail then
    -- float32 T5-XXL (19 GB) does not fit a 24 GB machine: its fp16 variant does
    local f16 = L.weight_files(tdir, "model", "fp16")
    if f16 and files and f16[1] ~= files[1] then
      io.stderr:write(("deepfloyd: %s's float32 weights (%.1f GB) do not fit; using the fp16 variant\n"):format(tdir, total(files) / 1e9))
      files, variant = f16, "fp16"
    end
  end
  L.check_memory(total(files), "the T5 encoder in '" .. tdir .. "'")
  local t0 = fdm.time()
  self.t5 = T5.load(tdir, { variant = variant })
  if self.device ~= "cpu" then self.t5:to(self.device) end
  self.tok = Tok.load(kdir)
  self.t5_load_s = fdm.time() - t0
  self.text_dir, self.tok_dir = tdir, kdir
  return self.t5, self.tok
end

function Model:free_text_encoder()
  if self.text_model and self.text_model ~= self then return self.text_model:free_text_encoder() end
  self.t5 = nil
  collectgarbage()
  collectgarbage()
end

-- width: the embeddings' last size the model takes
local function load_embedding_file(path, width)
  local ok, t = pcall(L.load_safetensors, path)
  if not ok then error(("deepfloyd: the embeddings file of prompt '@%s': %s"):format(path, t), 0) end
  local e = t.prompt_embeds
  if not e then
    local k, v = next(t)
    if next(t, k) ~= nil then error(("deepfloyd: '%s' holds several tensors and none is named prompt_embeds"):format(path), 0) end
    e = v
  end
  if e == nil then error(("deepfloyd: '%s' holds no tensor"):format(path), 0) end
  if e:dim() == 2 then e = e:unsqueeze(1) end
  if e:dim() ~= 3 or e.shape[1] ~= 1 then error(("deepfloyd: '%s': embeddings must be [77, D] or [1, 77, D]"):format(path), 0) end
  if e.dtype ~= "float32" and e.dtype ~= "float16" and e.dtype ~= "bfloat16" then
    error(("deepfloyd: '%s': embeddings must be float32, float16 or bfloat16, got %s"):format(path, e.dtype), 0)
  end
  if width and e.shape[3] ~= width then
    error(("deepfloyd: '%s': embeddings of width %d, the model takes %d"):format(path, e.shape[3], width), 0)
  end
  e = e:float():contiguous()
  -- e * 0 is 0 for every finite value, NaN for NaN and inf
  if (e * 0):sum():item() ~= 0 then error(("deepfloyd: '%s': the embeddings hold NaN or infinite values"):format(path), 0) end
  return e
end

-- the disk cache of src's text encoder: a function from a prompt to its
-- embeddings' file, and the encoder's folder (nil when there is no disk cache).
-- The key's model part (weight files, sizes, config, tokenizer, precision)
-- is read once per call of this function, not once per prompt.
function Model:embed_cache_paths(src)
  local tdir, kdir = src:text_folders()
  if not tdir or self.disk_cache == false then return nil end
  local files = L.weight_files(tdir, "model", src.variant) or {}
  local id = tdir .. "|" .. table.concat(files, ",")
  for _, f in ipairs(files) do id = id .. "|" .. file_size(f) end
  local cfgs = L.read_file(tdir .. "/config.json") or ""
  -- the tokenizer's files too (their content, hashed once per model): the
  -- same T5 weights with another vocabulary give other embeddings
  if not src.tokenizer_hash then
    local h = {}
    for i, f in ipairs { "spiece.model", "tokenizer_config.json", "special_tokens_map.json" } do
      h[i] = fnv(kdir and L.read_file(kdir .. "/" .. f) or "")
    end
    src.tokenizer_hash = table.concat(h, ",")
  end
  -- a half-precision encoder's embeddings are cached apart from float32 ones
  local model_key = id .. "|" .. fnv(cfgs) .. "|" .. src.tokenizer_hash .. "|" .. (src.text_autocast or "float32") .. "|"
  local dir = IF.cache_dir() .. "/deepfloyd/"
  return function(prompt) return dir .. fnv(model_key .. prompt) .. ".safetensors" end, tdir
end

-- the embeddings of prompt from memory or the disk cache (path_of: embed_cache_paths' function), or nil
local function cached(self, path_of, prompt)
  if self.embed_cache[prompt] then return self.embed_cache[prompt] end
  local path = path_of and path_of(prompt)
  if not (path and L.exists(path)) then return nil end
  local ok, e = pcall(function()
    local t, meta = fdm.io.load_safetensors(path)
    if meta.prompt ~= prompt then error("hash collision") end
    return t.prompt_embeds
  end)
  if not (ok and e) then return nil end
  e = self:on_device(e)
  self.embed_cache[prompt] = e
  return e
end

local function check_prompt(p)
  if type(p) ~= "string" then error("deepfloyd: a prompt must be a string", 3) end
end

-- the T5 embeddings [1, 77, D] of each prompt, in order (IFPipeline:
-- lower().strip(), padding to 77, all 77 positions kept). The prompts found
-- in no cache go through T5 together, as one batch: T5-XXL's weights are
-- then read once for all of them (3 prompts on the CPU: about 1.35x faster
-- than one at a time). Each is cached in memory and on disk, by prompt and model.
function Model:encode_many(prompts)
  local out, todo, seen = {}, {}, {}
  local src = (self.text_model and self.text_model ~= self) and self.text_model or self
  self.embed_cache = self.embed_cache or {}
  local path_of, tdir
  for i, p in ipairs(prompts) do
    check_prompt(p)
    if p:sub(1, 1) == "@" and p:match("%.safetensors$") then
      out[i] = self:on_device(load_embedding_file(p:sub(2), self.net.plan.context_dim))
    elseif self.embed_cache[p] then
      out[i] = self.embed_cache[p]
    else
      if path_of == nil then path_of, tdir = self:embed_cache_paths(src); path_of = path_of or false end
      out[i] = cached(self, path_of, p)
      if not out[i] and not seen[p] then seen[p] = true; todo[#todo + 1] = p end
    end
  end
  if #todo > 0 then
    local t5, tok = src:text_encoder()
    local Tok = require "fdm.deepfloyd.tokenizer"
    local ids, masks = {}, {}
    for k, p in ipairs(todo) do ids[k], masks[k] = tok:encode(Tok.preprocess(p), { max_length = 77 }) end
    local t0 = fdm.time()
    local e = fdm.no_grad(function()
      local ids_t, mask_t = fdm.tensor(ids, { dtype = "int64" }), fdm.tensor(masks, { dtype = "int64" })
      return fdm.autocast(src.text_autocast, function() return t5(ids_t, mask_t) end)
    end)
    src.last_embed_s = fdm.time() - t0
    if path_of then os.execute("mkdir -p '" .. IF.cache_dir() .. "/deepfloyd'") end
    for k, p in ipairs(todo) do
      local ek = e:narrow(1, k, 1):contiguous()
      if path_of then
        -- the disk cache is written from the CPU (a stage II model shares the
        -- stage I text encoder, which may sit on another device than self)
        pcall(fdm.io.save_safetensors, path_of(p), { prompt_embeds = ek.device == "cpu" and ek or ek:to("cpu") },
          { prompt = p, text_encoder = tdir })
      end
      self.embed_cache[p] = self:on_device(ek)
    end
    for i, p in ipairs(prompts) do out[i] = out[i] or self.embed_cache[p] end
  end
  return out
end

function Model:encode(prompt)
  check_prompt(prompt)
  return self:encode_many({ prompt })[1]
end

function Model:eval() return self end

-- the fdm.autocast dtypes of a --precision for the UNet and for the T5
-- encoder (nil: float32); Model:set_precision says why they differ
function IF.autocast_of(precision)
  local unet = require("fdm.cli").autocast_of(precision)
  return unet, unet and "bfloat16" or nil
end

-- "fp32", "bf16" or "fp16": the operands of the UNet's convolutions and
-- matrix products (fdm.autocast; float32 sums, float32 weights stay as they
-- are stored). The T5 encoder follows with bf16 for either half precision:
-- T5 v1.1's activations outgrow float16's range (transformers keeps its
-- feed-forward output layers in float32 for that reason), bfloat16's range
-- is float32's.
function Model:set_precision(precision)
  local text
  self.autocast, text = IF.autocast_of(precision)
  if text ~= self.text_autocast then self.embed_cache = nil end   -- embeddings of the other precision
  self.text_autocast = text
  self.precision = precision or "fp32"
  return self
end

-- a tensor on this model's device
function Model:on_device(t)
  if t.device ~= self.device then return t:to(self.device) end
  return t
end

-- moves the UNet, the T5 encoder (when this model owns one: now if loaded,
-- else as it loads) and the cached embeddings to dev. fdm.diffusion draws
-- its noise on model.device, so sampling then runs there; images come back
-- to the CPU only where the caller saves them.
function Model:to(dev)
  if dev == self.device then return self end
  fdm.zeros({ 1 }, { device = dev }) -- an unknown or absent device fails here, before anything moves
  -- the UNet and a loaded T5 together, before either moves
  local bytes = L.bytes_to_move(self.net.spec, self.net.p, dev)
  if self.t5 then bytes = bytes + L.bytes_to_move(self.t5.spec, self.t5.p, dev) end
  L.check_device_memory(bytes, dev, ("deepfloyd: '%s' (%s)"):format(self.dir, self.t5 and "UNet and T5 encoder" or "UNet"))
  self.net:to(dev)
  self.device = dev
  if self.t5 then self.t5:to(dev) end
  for k, e in pairs(self.embed_cache or {}) do self.embed_cache[k] = e:to(dev) end
  if self.low_res then self.low_res = self.low_res:to(dev) end
  return self
end

-- loads a stage I or stage II folder
function IF.load(dir, opts)
  opts = opts or {}
  local given = dir
  dir = IF.resolve(dir)
  local udir = L.exists(dir .. "/unet/config.json") and dir .. "/unet" or (L.exists(dir .. "/config.json") and dir or nil)
  if not udir then error(("deepfloyd: '%s' has no unet/config.json (a DeepFloyd IF folder in the diffusers layout expected)"):format(dir), 0) end
  local cfg = L.read_json(udir .. "/config.json", "deepfloyd")
  local _, plan = U.spec(cfg) -- unsupported block types fail here, before any weight is read
  local stage = plan.class_embed and 2 or 1
  -- a stage I folder given for stage II or the other way round (opts.stage: the one expected)
  if opts.stage and opts.stage ~= stage then
    local kind = { "stage I (64x64 from a prompt, e.g. IF-I-M-v1.0)", "stage II (the 256x256 upsampler, e.g. IF-II-M-v1.0)" }
    error(("deepfloyd: '%s' holds a %s model, but a %s model is expected here%s"):format(given,
      stage == 2 and "stage II" or "stage I", opts.stage == 2 and "stage II" or "stage I",
      opts.stage == 1 and " (--model takes " .. kind[1] .. "; --upsampler takes " .. kind[2] .. ")"
        or " (--upsampler takes " .. kind[2] .. ")"), 0)
  end
  local files = L.weight_files(udir, "diffusion_pytorch_model", opts.variant)
  local function total(list)
    local b = 0
    for _, f in ipairs(list or {}) do b = b + file_size(f) end
    return b
  end
  if files and not opts.variant then
    -- float32 files that would not fit: the fp16 variant when the folder has one
    local avail = L.mem_available()
    local f16 = L.weight_files(udir, "diffusion_pytorch_model", "fp16")
    if avail and total(files) > 0.8 * avail and f16 and f16[1] ~= files[1] then
      io.stderr:write(("deepfloyd: %s's float32 weights (%.1f GB) do not fit beside the rest; using the fp16 variant\n")
        :format(udir, total(files) / 1e9))
      files, opts.variant = f16, "fp16"
    end
  end
  if not files then L.no_weights(udir, "diffusion_pytorch_model", "deepfloyd") end
  local bytes = 0
  for _, f in ipairs(files) do bytes = bytes + file_size(f) end
  L.check_memory(bytes, "the UNet in '" .. udir .. "'")
  local sdir = find_sub(dir, "scheduler", "scheduler_config.json")
  if not sdir then error(("deepfloyd: '%s' has no scheduler/scheduler_config.json"):format(dir), 0) end
  local t0 = fdm.time()
  local net = U.load(udir, { variant = opts.variant })
  local self = setmetatable({}, Model)
  self.load_s = fdm.time() - t0
  self.dir, self.net, self.cfg, self.variant = dir, net, cfg, opts.variant
  self.scheduler = S.load(sdir)
  self.schedule = self.scheduler:schedule()
  self.T = self.schedule.T
  net.num_timesteps = self.T   -- the rows of its device table of sinusoids (graph mode)
  self.stage = net.plan.class_embed and 2 or 1
  local size = L.is_null(cfg.sample_size) and 64 or cfg.sample_size
  self.image_shape = { net.plan.out_channels // 2, size, size }
  self.device = "cpu"
  if opts.device and opts.device ~= "cpu" then self:to(opts.device) end
  self:set_precision(opts.precision)
  self.variance = "learned_range"
  self.clip_x0 = true
  self.threshold = { ratio = self.scheduler.config.dynamic_thresholding_ratio,
    max = self.stage == 2 and 1.0 or self.scheduler.config.sample_max_value }
  if self.stage == 2 then
    self.threshold.max = opts.sample_max_value or 1.0
    local nd = find_sub(dir, "image_noising_scheduler", "scheduler_config.json")
    self.noising = nd and S.load(nd) or S.new({ beta_schedule = "squaredcos_cap_v2" })
  end
  self.text_model = opts.text_model
  -- seconds per step on a CPU: the samplers show a bar on a terminal
  -- (model.progress = false: none; a table: fdm.progress.bar's options)
  self.progress = { desc = self.stage == 2 and "stage II" or "stage I", disable = not fdm.isatty(2) }
  self.prompts = "any text prompt (T5 embeddings); \"\" is the unconditional prompt"
  self.name = given
  self.num_parameters = net.num_parameters
  return self
end

-- an IF folder, its unet/ sub-folder, or a model id (found in the cache or not:
-- IF.load then says where it looked)
function IF.is_folder(path)
  if L.hub_id(expand_home(path)) then return true end
  local ok, dir = pcall(IF.resolve, path)
  return ok and (L.exists(dir .. "/unet/config.json") or L.exists(dir .. "/model_index.json"))
end

-- stage II: x64 [N, 3, h, w] in [-1, 1] (stage I's samples) -> [N, 3, S, S];
-- upscaled bilinearly (align_corners), noised to noise_level, concatenated to
-- the input of every step; CFG 4 by default; dynamic thresholding max 1.0;
-- IFSuperResolutionPipeline's timesteps for opts.steps (50), or opts.timesteps
function IF.upscale(m2, x64, cond, uncond, opts)
  opts = opts or {}
  local n = x64.shape[1]
  local S2 = m2.image_shape[2]
  -- stage I's final diffusers step returns its thresholded x0, within [-1, 1]
  x64 = m2:on_device(x64)
  cond, uncond = m2:on_device(cond), uncond and m2:on_device(uncond)
  local up = fdm.F.interpolate(fdm.clamp(x64, -1, 1), { size = { S2, S2 }, mode = "bilinear", align_corners = true })
  local level = opts.noise_level or 250
  if math.type(level) ~= "integer" or level < 0 or level >= m2.noising.T then
    error(("deepfloyd: noise_level %s outside 0 to %d"):format(tostring(level), m2.noising.T - 1), 2)
  end
  local noise = fdm.randn_like(up)
  m2.low_res = m2.noising:add_noise(up, noise, level)
  m2.noise_level = level
  local g = opts.cfg or 4
  -- IFSuperResolutionPipeline's timesteps (set_timesteps(steps), the last step to the clean image)
  local timesteps = opts.timesteps or m2.scheduler:pipeline_timesteps(opts.steps or 50)
  local c = cond
  if c.shape[1] ~= n then c = c:expand(n, c.shape[2], c.shape[3]) end
  local ok, res = pcall(D.sample, m2, n, {
    cond = c, uncond = uncond, cfg = g, timesteps = timesteps, threshold = m2.threshold,
    shape = m2.image_shape, add_variance = true, graph = opts.graph })
  m2.low_res = nil
  if not ok then error(res, 0) end
  return res
end

-- [-1, 1] -> [0, 1]
function IF.to01(x) return fdm.clamp((x + 1) * 0.5, 0, 1) end

return IF
