-- fdm.deepfloyd.t5: the T5 (v1.1) encoder of transformers 4.33.3
-- (T5EncoderModel), from its config.json and parameters named as transformers
-- writes them. Compositions of fdm ops: RMS norm (T5LayerNorm: no mean, no
-- bias), bidirectional relative position buckets, unscaled attention, gated
-- GELU (gelu_new = the tanh approximation) or ReLU feed-forward.
--
--   local T5 = require "fdm.deepfloyd.t5"
--   local enc = T5.load(dir)                  -- DIR/config.json + model*.safetensors
--   local h = enc(input_ids, attention_mask [, capture])   -- int64 [N, L] -> float32 [N, L, d_model]
--   T5.spec(cfg), T5.rms_norm(x, w, eps), T5.relative_position_bucket(rel, bidirectional, nb, maxd)
local fdm = require "fdm"
local F = fdm.F
local L = require "fdm.deepfloyd.loader"

local T5 = {}

local function null(v) return v == nil or v == L.null end

function T5.config(cfg)
  local c = {
    d_model = cfg.d_model, d_ff = cfg.d_ff, d_kv = cfg.d_kv, heads = cfg.num_heads, layers = cfg.num_layers,
    vocab = cfg.vocab_size, eps = null(cfg.layer_norm_epsilon) and 1e-6 or cfg.layer_norm_epsilon,
    buckets = null(cfg.relative_attention_num_buckets) and 32 or cfg.relative_attention_num_buckets,
    max_distance = null(cfg.relative_attention_max_distance) and 128 or cfg.relative_attention_max_distance,
  }
  local names = { d_model = "d_model", d_ff = "d_ff", d_kv = "d_kv", heads = "num_heads", layers = "num_layers",
    vocab = "vocab_size", buckets = "relative_attention_num_buckets", max_distance = "relative_attention_max_distance" }
  for _, k in ipairs { "d_model", "d_ff", "d_kv", "heads", "layers", "vocab", "buckets", "max_distance" } do
    if null(c[k]) then error(("t5 config: '%s' is missing"):format(names[k]), 0) end
    L.config_int(c[k], "t5 config", names[k], 1)
  end
  L.config_positive(c.eps, "t5 config", "layer_norm_epsilon")
  local ffp = null(cfg.feed_forward_proj) and "relu" or cfg.feed_forward_proj
  if type(ffp) ~= "string" then error(("t5 config: feed_forward_proj must be a string, got %s"):format(tostring(ffp)), 0) end
  c.gated = ffp:match("^gated%-") ~= nil
  local act = c.gated and ffp:sub(7) or ffp
  if act == "gelu" and c.gated then act = "gelu_new" end -- transformers maps gated-gelu to gelu_new
  if not null(cfg.dense_act_fn) then act = cfg.dense_act_fn end
  if act ~= "gelu_new" and act ~= "relu" and act ~= "gelu" then
    error(("t5 config: activation '%s' is not supported (gelu_new, gelu, relu)"):format(act), 0)
  end
  c.act = act
  return c
end

function T5.spec(cfg)
  local c = T5.config(cfg)
  local spec = {}
  local function add(n, s) spec[#spec + 1] = { n, s } end
  local inner = c.heads * c.d_kv
  add("shared.weight", { c.vocab, c.d_model })
  for i = 0, c.layers - 1 do
    local b = ("encoder.block.%d.layer."):format(i)
    add(b .. "0.SelfAttention.q.weight", { inner, c.d_model })
    add(b .. "0.SelfAttention.k.weight", { inner, c.d_model })
    add(b .. "0.SelfAttention.v.weight", { inner, c.d_model })
    add(b .. "0.SelfAttention.o.weight", { c.d_model, inner })
    if i == 0 then add(b .. "0.SelfAttention.relative_attention_bias.weight", { c.buckets, c.heads }) end
    add(b .. "0.layer_norm.weight", { c.d_model })
    if c.gated then
      add(b .. "1.DenseReluDense.wi_0.weight", { c.d_ff, c.d_model })
      add(b .. "1.DenseReluDense.wi_1.weight", { c.d_ff, c.d_model })
    else
      add(b .. "1.DenseReluDense.wi.weight", { c.d_ff, c.d_model })
    end
    add(b .. "1.DenseReluDense.wo.weight", { c.d_model, c.d_ff })
    add(b .. "1.layer_norm.weight", { c.d_model })
  end
  add("encoder.final_layer_norm.weight", { c.d_model })
  return spec, c
end

-- T5LayerNorm: x * rsqrt(mean(x^2) + eps) * w (no mean subtraction, no bias)
function T5.rms_norm(x, w, eps)
  local var = (x * x):mean(-1, true)
  return x * fdm.rsqrt(var + eps) * w
end

local f32 = function(x) return (string.unpack("<f", string.pack("<f", x))) end

-- transformers' _relative_position_bucket for one relative position (k - q),
-- with the float32 arithmetic of its log branch
function T5.relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
  local b = 0
  local n = num_buckets
  if bidirectional then
    n = n // 2
    if rel > 0 then b = b + n end
    rel = math.abs(rel)
  else
    rel = -math.min(rel, 0)
  end
  local max_exact = n // 2
  if rel < max_exact then return b + rel end
  local v = f32(math.log(f32(rel / max_exact)))
  v = f32(v / f32(math.log(max_distance / max_exact)))
  v = f32(v * (n - max_exact))
  local large = max_exact + math.floor(v)
  return b + math.min(large, n - 1)
end

-- int64 [q * k] bucket indices for a q x k grid
function T5.bucket_table(q, k, cfg)
  local idx = {}
  for i = 0, q - 1 do
    for j = 0, k - 1 do
      idx[#idx + 1] = T5.relative_position_bucket(j - i, true, cfg.buckets, cfg.max_distance)
    end
  end
  return fdm.tensor(idx, { dtype = "int64" })
end

local Enc = {}
Enc.__index = Enc
T5.Encoder = Enc

function T5.new(cfg, params, opts)
  opts = opts or {}
  local spec, c = T5.spec(cfg)
  if params["shared.weight"] == nil and params["encoder.embed_tokens.weight"] ~= nil then
    params["shared.weight"] = params["encoder.embed_tokens.weight"]
  end
  local extra = L.check(params, spec, opts.what or "t5")
  local self = setmetatable({ cfg = c, spec = spec }, Enc)
  local p = {}
  for _, e in ipairs(spec) do
    local t = params[e[1]]
    if #e[2] == 1 and t.dtype ~= "float32" then t = t:float() end
    p[e[1]] = t
  end
  self.p = p
  self.num_parameters = L.spec_params(spec)
  self.bias_cache = {}
  -- collect dead activations after every layer of a large encoder (see fdm.deepfloyd.unet)
  if opts.collect ~= nil then self.collect = opts.collect else self.collect = self.num_parameters > 5e7 end
  return self
end

-- [1, heads, q, k] position bias of block 0
function Enc:position_bias(q, k)
  local key = q .. "x" .. k
  if self.bias_cache[key] then return self.bias_cache[key] end
  local c = self.cfg
  local idx = T5.bucket_table(q, k, c)
  if (self.device or "cpu") ~= "cpu" then idx = idx:to(self.device) end
  local w = self.p["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
  local b = w:index_select(1, idx)
  if b.dtype ~= "float32" then b = b:float() end
  b = b:reshape(q, k, c.heads):permute(3, 1, 2):unsqueeze(1):contiguous()
  self.bias_cache[key] = b
  return b
end

local function gelu_new(x) return F.gelu(x, "tanh") end

function Enc:forward(ids, mask, cap)
  local c, p = self.cfg, self.p
  local N, Lq = ids.shape[1], ids.shape[2]
  local dev = self.device or "cpu"
  if ids.device ~= dev then ids = ids:to(dev) end
  if mask and mask.device ~= dev then mask = mask:to(dev) end
  local h = p["shared.weight"]:index_select(1, ids:reshape(N * Lq))
  if h.dtype ~= "float32" then h = h:float() end
  h = h:reshape(N, Lq, c.d_model)
  if cap then cap.embed_tokens = h end
  local bias = self:position_bias(Lq, Lq)
  if cap then cap.position_bias = bias end
  if mask then
    -- (1 - mask) * finfo(float32).min, broadcast over heads and queries
    local m = (1 - mask:float()) * -3.4028234663852886e38
    bias = bias + m:reshape(N, 1, 1, Lq)
  end
  local inner = c.heads * c.d_kv
  local scale = math.sqrt(c.d_kv) -- sdpa divides by sqrt(d_kv); T5 does not scale
  local act = c.act == "relu" and F.relu or (c.act == "gelu" and function(x) return F.gelu(x) end or gelu_new)
  for i = 0, c.layers - 1 do
    local b = ("encoder.block.%d.layer."):format(i)
    local x = T5.rms_norm(h, p[b .. "0.layer_norm.weight"], c.eps)
    local function split(t) return t:reshape(N, Lq, c.heads, c.d_kv):transpose(2, 3):contiguous() end
    local q = split(F.linear(x, p[b .. "0.SelfAttention.q.weight"]) * scale)
    local k = split(F.linear(x, p[b .. "0.SelfAttention.k.weight"]))
    local v = split(F.linear(x, p[b .. "0.SelfAttention.v.weight"]))
    local a = F.scaled_dot_product_attention(q, k, v, bias)
    a = a:transpose(2, 3):reshape(N, Lq, inner)
    h = h + F.linear(a, p[b .. "0.SelfAttention.o.weight"])
    x = T5.rms_norm(h, p[b .. "1.layer_norm.weight"], c.eps)
    local ff
    if c.gated then
      ff = act(F.linear(x, p[b .. "1.DenseReluDense.wi_0.weight"])) * F.linear(x, p[b .. "1.DenseReluDense.wi_1.weight"])
    else
      ff = act(F.linear(x, p[b .. "1.DenseReluDense.wi.weight"]))
    end
    h = h + F.linear(ff, p[b .. "1.DenseReluDense.wo.weight"])
    if cap then cap["block." .. i] = h end
    if self.collect then L.collect(self.device) end
  end
  h = T5.rms_norm(h, p["encoder.final_layer_norm.weight"], c.eps)
  if cap then cap.last_hidden_state = h end
  return h
end
Enc.__call = function(self, ...) return self:forward(...) end

-- moves every parameter to dev, keeping its dtype (see fdm.deepfloyd.unet's
-- Net:to); the cached position biases were made on the old device
function Enc:to(dev)
  if (self.device or "cpu") == dev then return self end
  L.check_device_memory(L.bytes_to_move(self.spec, self.p, dev), dev, "deepfloyd: the T5 encoder")
  for _, e in ipairs(self.spec) do
    local t = self.p[e[1]]
    if t.device ~= dev then self.p[e[1]] = t:to(dev) end
  end
  self.device = dev
  self.bias_cache = {}
  collectgarbage()
  collectgarbage()
  return self
end

function T5.load(dir, opts)
  opts = opts or {}
  if not L.exists(dir .. "/config.json") then error(("t5: no config.json in '%s'"):format(dir), 0) end
  local cfg = L.read_json(dir .. "/config.json", "t5")
  local params, files = L.weights(dir, { base = "model", variant = opts.variant })
  -- the decoder of a full T5 checkpoint is not needed
  for k in pairs(params) do
    if k:match("^decoder%.") or k == "lm_head.weight" then params[k] = nil end
  end
  local enc = T5.new(cfg, params, { what = "t5 '" .. dir .. "'" })
  enc.dir, enc.files = dir, files
  return enc
end

return T5
