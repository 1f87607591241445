-- fdm.deepfloyd.unet: diffusers' UNet2DConditionModel (0.21.4) as DeepFloyd IF
-- uses it (stage I and stage II), built from a config.json and a flat table of
-- parameters named as diffusers writes them. Everything is a composition of
-- fdm ops (group norm, conv, linear, GELU, attention, nearest upsampling,
-- average pooling), so it runs on every device and needs no kernel of its own.
--
--   local U = require "fdm.deepfloyd.unet"
--   local spec, plan = U.spec(cfg)          -- {{name, shape}, ...}: every parameter the config implies
--   local net = U.new(cfg, params)          -- params: name -> tensor (fp32, fp16 or bf16 weights)
--   local out = net(sample, timestep, encoder_hidden_states [, class_labels [, capture]])
--                                           -- out [N, out_channels, H, W]; capture (a table) receives
--                                           -- the intermediate activations under the golden names
--   U.random_params(spec, {dtype = "float16", device = dev}) -- random weights for a config (speed measurements)
--
-- Supported: down blocks ResnetDownsampleBlock2D / SimpleCrossAttnDownBlock2D
-- (also DownBlock2D), up blocks ResnetUpsampleBlock2D / SimpleCrossAttnUpBlock2D,
-- mid block UNetMidBlock2DSimpleCrossAttn, scale_shift or default time
-- conditioning, positional (sinusoidal) time embedding, addition_embed_type
-- "text" (attention pooling), encoder_hid_dim_type "text_proj", class_embed_type
-- "timestep" (stage II's noise level). Other block types raise an error naming them.
local fdm = require "fdm"
local L = require "fdm.deepfloyd.loader"
local F = fdm.F

local U = {}

local function null(v) return v == nil or (type(v) == "table" and getmetatable(v) and tostring(v) == "null") end
local function val(v, def) if null(v) then return def end return v end

local function per_block(v, n, what)
  if type(v) == "table" and not null(v) then
    if #v ~= n then error(("unet config: %s has %d entries for %d blocks"):format(what, #v, n), 0) end
    return v
  end
  local out = {}
  for i = 1, n do out[i] = v end
  return out
end

local W = "unet config"
local function int_min(v, what, lo) return L.config_int(v, W, what, lo) end
local function ints_min(list, what, lo) return L.config_ints(list, W, what, lo) end
local function positive(v, what) return L.config_positive(v, W, what) end

local function act_fn(name)
  if name == "gelu" then return function(x) return F.gelu(x) end end
  if name == "silu" or name == "swish" then return F.silu end
  if name == "mish" then return function(x) return x * F.tanh(F.softplus and F.softplus(x) or fdm.log(1 + fdm.exp(x))) end end
  error(("unet config: activation '%s' is not supported (gelu, silu)"):format(tostring(name)), 0)
end

local DOWN = { ResnetDownsampleBlock2D = { attn = false }, SimpleCrossAttnDownBlock2D = { attn = true },
  DownBlock2D = { attn = false, plain = true } }
local UP = { ResnetUpsampleBlock2D = { attn = false }, SimpleCrossAttnUpBlock2D = { attn = true },
  UpBlock2D = { attn = false, plain = true } }

-- the plan: every block with its channel counts; the spec: every parameter
function U.spec(cfg)
  local spec = {}
  local function add(name, shape) spec[#spec + 1] = { name, shape } end
  local function lin(pre, i, o, bias)
    add(pre .. ".weight", { o, i })
    if bias ~= false then add(pre .. ".bias", { o }) end
  end
  local function conv(pre, i, o, k, bias)
    add(pre .. ".weight", { o, i, k, k })
    if bias ~= false then add(pre .. ".bias", { o }) end
  end
  local function norm(pre, c) add(pre .. ".weight", { c }); add(pre .. ".bias", { c }) end

  local boc = cfg.block_out_channels
  if type(boc) ~= "table" or #boc == 0 then error("unet config: block_out_channels missing", 0) end
  local nb = #boc
  ints_min(boc, "block_out_channels", 1)
  local dtypes, utypes = cfg.down_block_types, cfg.up_block_types
  if type(dtypes) ~= "table" or #dtypes ~= nb then error("unet config: down_block_types must list one type per block_out_channels entry", 0) end
  if type(utypes) ~= "table" or #utypes ~= nb then error("unet config: up_block_types must list one type per block_out_channels entry", 0) end
  local tss = val(cfg.resnet_time_scale_shift, "default")
  if tss ~= "scale_shift" and tss ~= "default" then error(("unet config: resnet_time_scale_shift '%s' is not supported"):format(tss), 0) end
  if val(cfg.time_embedding_type, "positional") ~= "positional" then
    error(("unet config: time_embedding_type '%s' is not supported (positional)"):format(cfg.time_embedding_type), 0)
  end
  if val(cfg.class_embeddings_concat, false) then error("unet config: class_embeddings_concat is not supported", 0) end
  if not null(cfg.time_cond_proj_dim) then error("unet config: time_cond_proj_dim is not supported", 0) end
  if val(cfg.dual_cross_attention, false) or val(cfg.use_linear_projection, false) then
    error("unet config: dual_cross_attention / use_linear_projection are not supported", 0)
  end
  local layers = ints_min(per_block(val(cfg.layers_per_block, 2), nb, "layers_per_block"), "layers_per_block", 1)
  local head_dim = ints_min(per_block(val(cfg.attention_head_dim, 8), nb, "attention_head_dim"), "attention_head_dim", 1)
  local oca = val(cfg.only_cross_attention, false)
  local only_cross = per_block(oca, nb, "only_cross_attention")
  -- as diffusers decides it: the config's value, else a single only_cross_attention, else false
  local mid_only = val(cfg.mid_block_only_cross_attention, nil)
  if mid_only == nil then mid_only = type(oca) == "boolean" and oca or false end
  if not null(cfg.num_attention_heads) then
    -- diffusers 0.21 refuses it too; SimpleCrossAttn blocks take attention_head_dim
    error("unet config: num_attention_heads is not supported (attention_head_dim gives the heads)", 0)
  end
  local cad = val(cfg.cross_attention_dim, 1280)
  if type(cad) == "table" then error("unet config: a per-block cross_attention_dim is not supported", 0) end
  int_min(cad, "cross_attention_dim", 1)
  local cnorm = val(cfg.cross_attention_norm, nil)
  if cnorm ~= nil and cnorm ~= "group_norm" then error(("unet config: cross_attention_norm '%s' is not supported"):format(cnorm), 0) end
  local groups = int_min(val(cfg.norm_num_groups, 32), "norm_num_groups", 1)
  for i, c in ipairs(boc) do
    if c % groups ~= 0 then
      error(("unet config: norm_num_groups %d does not divide block_out_channels[%d] = %d"):format(groups, i, c), 0)
    end
  end
  local c0 = boc[1]
  local ted = int_min(val(cfg.time_embedding_dim, c0 * 4), "time_embedding_dim", 1)
  local plan = {
    nb = nb, c0 = c0, ted = ted, groups = groups, eps = val(cfg.norm_eps, 1e-5),
    act = val(cfg.act_fn, "silu"), scale_shift = tss == "scale_shift",
    skip_time_act = val(cfg.resnet_skip_time_act, false),
    out_scale = val(cfg.resnet_out_scale_factor, 1.0), mid_scale = val(cfg.mid_block_scale_factor, 1.0),
    flip = val(cfg.flip_sin_to_cos, true), freq_shift = val(cfg.freq_shift, 0),
    in_channels = val(cfg.in_channels, 4), out_channels = val(cfg.out_channels, 4),
    cross_norm = cnorm == "group_norm", cad = cad,
    time_embed_act = val(cfg.time_embedding_act_fn, nil), timestep_post_act = val(cfg.timestep_post_act, nil),
    sample_size = val(cfg.sample_size, 64), center_input = val(cfg.center_input_sample, false),
  }
  if plan.timestep_post_act ~= nil then error("unet config: timestep_post_act is not supported", 0) end
  positive(plan.eps, "norm_eps")
  positive(plan.out_scale, "resnet_out_scale_factor")
  positive(plan.mid_scale, "mid_block_scale_factor")
  L.config_number(plan.freq_shift, W, "freq_shift")
  int_min(plan.in_channels, "in_channels", 1)
  int_min(plan.out_channels, "out_channels", 1)
  int_min(plan.sample_size, "sample_size", 1)
  act_fn(plan.act)
  if plan.time_embed_act then act_fn(plan.time_embed_act) end
  local kin, kout = val(cfg.conv_in_kernel, 3), val(cfg.conv_out_kernel, 3)
  for _, k in ipairs { { kin, "conv_in_kernel" }, { kout, "conv_out_kernel" } } do
    if int_min(k[1], k[2], 1) % 2 == 0 then error(("unet config: %s must be odd (the padding keeps the size), got %d"):format(k[2], k[1]), 0) end
  end
  plan.kin, plan.kout = kin, kout
  local temb_ch = ted

  -- time embedding
  lin("time_embedding.linear_1", c0, ted)
  lin("time_embedding.linear_2", ted, ted)
  local cet = val(cfg.class_embed_type, nil)
  if cet == "timestep" then
    plan.class_embed = true
    lin("class_embedding.linear_1", c0, ted)
    lin("class_embedding.linear_2", ted, ted)
  elseif cet ~= nil then
    error(("unet config: class_embed_type '%s' is not supported (timestep or null)"):format(cet), 0)
  elseif not null(cfg.num_class_embeds) then
    error("unet config: num_class_embeds (a class label embedding table) is not supported", 0)
  end
  local ehd = val(cfg.encoder_hid_dim, nil)
  local ehdt = val(cfg.encoder_hid_dim_type, nil)
  if ehdt == nil and ehd ~= nil then ehdt = "text_proj" end
  if ehdt == "text_proj" then
    int_min(ehd, "encoder_hid_dim", 1)
    plan.hid_proj = true
    lin("encoder_hid_proj", ehd, cad)
  elseif ehdt ~= nil then
    error(("unet config: encoder_hid_dim_type '%s' is not supported (text_proj)"):format(ehdt), 0)
  end
  plan.context_dim = ehd or cad
  local aet = val(cfg.addition_embed_type, nil)
  if aet == "text" then
    local from = ehd or cad
    plan.add_embed = { dim = from, heads = int_min(val(cfg.addition_embed_type_num_heads, 64), "addition_embed_type_num_heads", 1) }
    if from % plan.add_embed.heads ~= 0 then error("unet config: addition_embed_type_num_heads does not divide the text width", 0) end
    norm("add_embedding.norm1", from)
    add("add_embedding.pool.positional_embedding", { 1, from })
    lin("add_embedding.pool.k_proj", from, from)
    lin("add_embedding.pool.q_proj", from, from)
    lin("add_embedding.pool.v_proj", from, from)
    lin("add_embedding.proj", from, ted)
    norm("add_embedding.norm2", ted)
  elseif aet ~= nil then
    error(("unet config: addition_embed_type '%s' is not supported (text or null)"):format(aet), 0)
  end
  conv("conv_in", plan.in_channels, c0, kin)

  local function resnet(pre, cin, cout, extra)
    local r = { pre = pre, cin = cin, cout = cout }
    for k, v in pairs(extra or {}) do r[k] = v end
    norm(pre .. ".norm1", cin)
    conv(pre .. ".conv1", cin, cout, 3)
    lin(pre .. ".time_emb_proj", temb_ch, plan.scale_shift and 2 * cout or cout)
    norm(pre .. ".norm2", cout)
    conv(pre .. ".conv2", cout, cout, 3)
    if cin ~= cout then r.shortcut = true; conv(pre .. ".conv_shortcut", cin, cout, 1) end
    return r
  end
  local function attention(pre, c, hd, only)
    if c % hd ~= 0 then error(("unet config: attention_head_dim %d does not divide %d channels"):format(hd, c), 0) end
    local a = { pre = pre, c = c, heads = c // hd, hd = hd, only_cross = only }
    norm(pre .. ".group_norm", c)
    if plan.cross_norm then norm(pre .. ".norm_cross", cad) end
    lin(pre .. ".to_q", c, c)
    if not only then lin(pre .. ".to_k", c, c); lin(pre .. ".to_v", c, c) end
    lin(pre .. ".add_k_proj", cad, c)
    lin(pre .. ".add_v_proj", cad, c)
    lin(pre .. ".to_out.0", c, c)
    return a
  end

  plan.down = {}
  local out_ch = c0
  for i = 1, nb do
    local ty = dtypes[i]
    local info = DOWN[ty]
    if not info then error(("unet config: down block type '%s' is not supported (ResnetDownsampleBlock2D, SimpleCrossAttnDownBlock2D)"):format(tostring(ty)), 0) end
    local in_ch = out_ch
    out_ch = boc[i]
    local final = i == nb
    local pre = ("down_blocks.%d"):format(i - 1)
    local b = { type = ty, resnets = {}, attentions = {} }
    for j = 1, layers[i] do
      b.resnets[j] = resnet(("%s.resnets.%d"):format(pre, j - 1), j == 1 and in_ch or out_ch, out_ch)
      if info.attn then b.attentions[j] = attention(("%s.attentions.%d"):format(pre, j - 1), out_ch, head_dim[i], only_cross[i]) end
    end
    if not final then
      if info.plain then
        error("unet config: DownBlock2D with a conv downsampler is not supported", 0)
      end
      b.down = resnet(pre .. ".downsamplers.0", out_ch, out_ch, { down = true })
    end
    plan.down[i] = b
  end

  local mty = val(cfg.mid_block_type, "UNetMidBlock2DCrossAttn")
  if mty ~= "UNetMidBlock2DSimpleCrossAttn" then
    error(("unet config: mid block type '%s' is not supported (UNetMidBlock2DSimpleCrossAttn)"):format(mty), 0)
  end
  local cl = boc[nb]
  plan.mid = {
    resnets = { resnet("mid_block.resnets.0", cl, cl, { mid = true }) },
    attentions = { attention("mid_block.attentions.0", cl, head_dim[nb], mid_only) },
  }
  plan.mid.resnets[2] = resnet("mid_block.resnets.1", cl, cl, { mid = true })

  plan.up = {}
  local rev = {}
  for i = 1, nb do rev[i] = boc[nb + 1 - i] end
  out_ch = rev[1]
  for i = 1, nb do
    local ty = utypes[i]
    local info = UP[ty]
    if not info then error(("unet config: up block type '%s' is not supported (ResnetUpsampleBlock2D, SimpleCrossAttnUpBlock2D)"):format(tostring(ty)), 0) end
    local final = i == nb
    local prev = out_ch
    out_ch = rev[i]
    local in_ch = rev[math.min(i + 1, nb)]
    local nl = layers[nb + 1 - i] + 1
    local hd = head_dim[nb + 1 - i]
    local oc = only_cross[nb + 1 - i]
    local pre = ("up_blocks.%d"):format(i - 1)
    local b = { type = ty, resnets = {}, attentions = {} }
    for j = 1, nl do
      local skip = (j == nl) and in_ch or out_ch
      local rin = (j == 1) and prev or out_ch
      b.resnets[j] = resnet(("%s.resnets.%d"):format(pre, j - 1), rin + skip, out_ch)
      if info.attn then b.attentions[j] = attention(("%s.attentions.%d"):format(pre, j - 1), out_ch, hd, oc) end
    end
    if not final then
      if info.plain then error("unet config: UpBlock2D with a conv upsampler is not supported", 0) end
      b.up = resnet(pre .. ".upsamplers.0", out_ch, out_ch, { up = true })
    end
    plan.up[i] = b
  end
  norm("conv_norm_out", c0)
  conv("conv_out", c0, plan.out_channels, kout)
  return spec, plan
end

---------------------------------------------------------------- parameters
-- matrices used by F.linear / F.conv2d may stay float16 / bfloat16 (the CPU
-- kernels widen them block by block); everything used elementwise becomes float32
local function prepare(params, spec)
  local p = {}
  for _, e in ipairs(spec) do
    local name = e[1]
    local t = params[name]
    local keep = #e[2] >= 2 and name:match("%.weight$")
    if not keep and t.dtype ~= "float32" then t = t:float() end
    p[name] = t
  end
  return p
end
U.prepare = prepare

function U.random_params(spec, opts)
  opts = opts or {}
  local dt = opts.dtype or "float32"
  local on = { device = opts.device }   -- drawn where they will be used (a GPU: no 17 GB host copy)
  local p = {}
  for _, e in ipairs(spec) do
    local name, shape = e[1], e[2]
    local t
    if name:match("norm[^.]*%.weight$") or name:match("norm%d?%.weight$") then
      t = fdm.ones(shape, on)
    elseif name:match("%.bias$") then
      t = fdm.zeros(shape, on)
    else
      local fan = 1
      for i = 2, #shape do fan = fan * shape[i] end
      if #shape == 1 then fan = shape[1] end
      t = fdm.randn(shape, on):mul_(1 / math.sqrt(math.max(fan, 1)))
      if dt ~= "float32" and #shape >= 2 then
        local h = dt == "float16" and t:half() or t:bfloat16()
        t:free() -- at once: the collector would let gigabytes of float32 draws pile up
        t = h
      end
    end
    p[name] = t
  end
  return p
end

---------------------------------------------------------------- forward
local Net = {}
Net.__index = Net
U.Net = Net

function U.new(cfg, params, opts)
  opts = opts or {}
  local spec, plan = U.spec(cfg)
  local unused = L.check(params, spec, opts.what or "unet")
  if #unused > 0 then
    -- diffusers warns here too: a published file holds exactly its model's tensors, so extras mean a config
    -- that builds a smaller model than the weights were trained as (refusing could refuse a real folder)
    io.stderr:write(("deepfloyd: %s: %d tensors in the weights are not used by its config (%s%s); "
      .. "check that config.json belongs to these weights\n"):format(opts.what or "unet", #unused,
      table.concat(unused, ", ", 1, math.min(#unused, 3)), #unused > 3 and ", ..." or ""))
  end
  local self = setmetatable({ cfg = cfg, plan = plan, spec = spec }, Net)
  self.p = prepare(params, spec)
  self.act = act_fn(plan.act)
  self.num_parameters = L.spec_params(spec)
  -- fdm's collector runs after as many new bytes as were alive: with gigabytes
  -- of weights, dead activations would pile up to the weights' size; a large
  -- model collects after every block instead (opts.collect = false to skip)
  if opts.collect ~= nil then self.collect = opts.collect else self.collect = self.num_parameters > 5e7 end
  return self
end

-- the sinusoid of diffusers' get_timestep_embedding, computed in double
-- precision on the Lua side (t: list of numbers) -> float32 [N, dim]
function U.timestep_embedding(ts, dim, flip, shift)
  local half = dim // 2
  local rows = {}
  for n, t in ipairs(ts) do
    local s, c = {}, {}
    for i = 0, half - 1 do
      local f = math.exp(-math.log(10000) * i / (half - (shift or 0)))
      s[i + 1], c[i + 1] = math.sin(t * f), math.cos(t * f)
    end
    local row = {}
    local a, b = s, c
    if flip then a, b = c, s end
    for i = 1, half do row[i] = a[i]; row[half + i] = b[i] end
    if dim % 2 == 1 then row[dim] = 0 end
    rows[n] = row
  end
  return fdm.tensor(rows)
end

local function tlist(t, n)
  if type(t) == "number" then
    local l = {}
    for i = 1, n do l[i] = t end
    return l
  end
  local l = t:reshape(t:numel()):tolist()
  if #l == 1 and n > 1 then for i = 2, n do l[i] = l[1] end end
  if #l ~= n then error(("unet: %d timesteps for a batch of %d"):format(#l, n), 3) end
  return l
end

function Net:linear(pre, x) return F.linear(x, self.p[pre .. ".weight"], self.p[pre .. ".bias"]) end
function Net:conv(pre, x, pad) return F.conv2d(x, self.p[pre .. ".weight"], self.p[pre .. ".bias"], { padding = pad }) end
function Net:gn(pre, x, groups, eps)
  return F.group_norm(x, groups, self.p[pre .. ".weight"], self.p[pre .. ".bias"], eps)
end

-- act(group_norm(x) * scale + shift) (opts.scale, opts.shift: [N, C, 1, 1] or nil): one fused pass,
-- with the activation in it for the gelu and silu of IF's configs, after it for others
local FUSED_ACT = { gelu = "gelu", silu = "silu", swish = "silu" }
function Net:gn_act(pre, x, groups, eps, opts)
  local fused = FUSED_ACT[self.plan.act]
  opts = opts or {}
  local h = F.group_norm_act(x, groups, self.p[pre .. ".weight"], self.p[pre .. ".bias"], eps,
    { scale = opts.scale, shift = opts.shift, act = fused or "none" })
  return fused and h or self.act(h)
end

function Net:temb_mlp(pre, x)
  return self:linear(pre .. ".linear_2", self.act(self:linear(pre .. ".linear_1", x)))
end

-- frees old (t:free(): its memory goes back to the allocator now, not at the
-- next collection; an autograd graph keeps its own reference) and returns new
local function swap(old, new)
  old:free()
  return new
end

-- a ResNet block frees each intermediate map once used: at 256x256 a map is
-- 67 MB, and the block's collection comes only at the end of its level
function Net:resnet(r, x, temb, scale)
  local pl = self.plan
  local h = self:gn_act(r.pre .. ".norm1", x, pl.groups, pl.eps)
  local own_x = false   -- x is the caller's until resized or projected here
  if r.up then
    x, own_x = F.interpolate(x, { scale_factor = 2, mode = "nearest" }), true
    h = swap(h, F.interpolate(h, { scale_factor = 2, mode = "nearest" }))
  elseif r.down then
    x, own_x = F.avg_pool2d(x, 2, { stride = 2 }), true
    h = swap(h, F.avg_pool2d(h, 2, { stride = 2 }))
  end
  h = swap(h, self:conv(r.pre .. ".conv1", h, 1))
  local t = temb
  if not pl.skip_time_act then t = self.act(t) end
  t = self:linear(r.pre .. ".time_emb_proj", t)
  local n, c = t.shape[1], t.shape[2]
  t = t:reshape(n, c, 1, 1)
  if pl.scale_shift then
    local co = r.cout
    h = swap(h, self:gn_act(r.pre .. ".norm2", h, pl.groups, pl.eps, { scale = t:narrow(2, 1, co) + 1, shift = t:narrow(2, co + 1, co) }))
  else
    h = swap(h, h + t)
    h = swap(h, self:gn_act(r.pre .. ".norm2", h, pl.groups, pl.eps))
  end
  h = swap(h, self:conv(r.pre .. ".conv2", h, 1))
  if r.shortcut then
    local xs = self:conv(r.pre .. ".conv_shortcut", x, 0)
    if own_x then x:free() end
    x, own_x = xs, true
  end
  local out = swap(h, x + h)
  if own_x then x:free() end
  if scale ~= 1 then out = swap(out, out * (1 / scale)) end
  return out
end

-- SimpleCrossAttn (AttnAddedKVProcessor): group-normed spatial tokens attend to
-- [add_k/v_proj(norm_cross(context)), to_k/v(tokens)]; to_out; + residual.
-- Every tensor it made but its result is freed when it returns (its maps and
-- the prompt's projections: 13-26 times the result's size on the tiny model,
-- which would wait for the level's collection).
function Net:attention(a, x, ctx)
  local pl = self.plan
  local B, C, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
  local heads, hd = a.heads, a.hd
  local made = {}
  local function m(t)
    made[#made + 1] = t
    return t
  end
  local h = m(m(m(self:gn(a.pre .. ".group_norm", x, pl.groups, 1e-5)):reshape(B, C, H * W)):transpose(2, 3))
  if pl.cross_norm then
    ctx = m(m(F.group_norm(m(ctx:transpose(2, 3)), 32, self.p[a.pre .. ".norm_cross.weight"],
      self.p[a.pre .. ".norm_cross.bias"], 1e-5)):transpose(2, 3))
  end
  local function split(t) -- [B, L, C] -> [B, heads, L, hd], contiguous
    return m(m(m(t:reshape(B, t.shape[2], heads, hd)):transpose(2, 3)):contiguous())
  end
  local q = split(m(self:linear(a.pre .. ".to_q", h)))
  local ek = m(self:linear(a.pre .. ".add_k_proj", ctx))
  local ev = m(self:linear(a.pre .. ".add_v_proj", ctx))
  local k, v
  if a.only_cross then
    k, v = ek, ev
  else
    k = m(fdm.cat({ ek, m(self:linear(a.pre .. ".to_k", h)) }, 2))
    v = m(fdm.cat({ ev, m(self:linear(a.pre .. ".to_v", h)) }, 2))
  end
  local o = m(F.scaled_dot_product_attention(q, split(k), split(v)))
  o = m(m(o:transpose(2, 3)):reshape(B, H * W, C))
  o = m(self:linear(a.pre .. ".to_out.0", o))
  local out = m(m(o:transpose(2, 3)):reshape(B, C, H, W)) + x
  for _, t in ipairs(made) do t:free() end
  return out
end

-- AttentionPooling + the TextTimeEmbedding around it
function Net:add_embedding(enc)
  local ae = self.plan.add_embed
  local p = self.p
  local B, Lt, D = enc.shape[1], enc.shape[2], enc.shape[3]
  local x = F.layer_norm(enc, { D }, p["add_embedding.norm1.weight"], p["add_embedding.norm1.bias"], 1e-5)
  local cls = x:mean(2, true) + p["add_embedding.pool.positional_embedding"]
  local xx = fdm.cat({ cls, x }, 2)
  local heads = ae.heads
  local hd = D // heads
  local function split(t) return t:reshape(B, t.shape[2], heads, hd):transpose(2, 3):contiguous() end
  local q = split(self:linear("add_embedding.pool.q_proj", cls))
  local k = split(self:linear("add_embedding.pool.k_proj", xx))
  local v = split(self:linear("add_embedding.pool.v_proj", xx))
  local a = F.scaled_dot_product_attention(q, k, v):reshape(B, D)
  a = self:linear("add_embedding.proj", a)
  return F.layer_norm(a, { a.shape[2] }, p["add_embedding.norm2.weight"], p["add_embedding.norm2.bias"], 1e-5)
end

-- the sinusoid of t for n images on device dev, from the double-precision
-- host path. An int64 tensor of timesteps on a device (a sampler in graph
-- mode keeps the step's t there, and a capture cannot read it on the host)
-- picks the same rows from a table of every timestep's sinusoid, made on
-- that device on first use: a one-hot mask times the table, summed over the
-- timesteps (exact: one nonzero term per sum; a matrix product would be
-- rounded by autocast or TF32), so graphed and eager steps compute the same
-- numbers.
function Net:sinusoid(t, n, dev)
  local pl = self.plan
  if fdm.is_tensor(t) and t.device ~= "cpu" and t.dtype == "int64" then
    local k = t:numel()
    if k ~= 1 and k ~= n then error(("unet: %d timesteps for a batch of %d"):format(k, n), 3) end
    self._sin_table = self._sin_table or {}
    local tab = self._sin_table[t.device]
    if not tab then
      local T, all = self.num_timesteps or 1000, {}
      for i = 1, T do all[i] = i - 1 end
      tab = { rows = U.timestep_embedding(all, pl.c0, pl.flip, pl.freq_shift):to(t.device),
              ids = fdm.arange(0, T, { dtype = "int64", device = t.device }):reshape(1, T) }
      self._sin_table[t.device] = tab
    end
    if not fdm.graph_capturing() then   -- the range is checked where t can be read (eagerly)
      local lo, hi = t:min():item(), t:max():item()
      if lo < 0 or hi >= tab.ids:numel() then
        error(("unet: timestep %d outside the model's 0..%d"):format(lo < 0 and lo or hi, tab.ids:numel() - 1), 0)
      end
    end
    local T, C = tab.ids:numel(), pl.c0
    local onehot = fdm.eq(t:reshape(k, 1), tab.ids):float()
    local tp = (onehot:reshape(k, T, 1) * tab.rows:reshape(1, T, C)):sum(2)
    if k ~= n then tp = tp:expand(n, tp.shape[2]) end
    return tp
  end
  local tp = U.timestep_embedding(tlist(t, n), pl.c0, pl.flip, pl.freq_shift)
  if dev ~= "cpu" then tp = tp:to(dev) end
  return tp
end

-- a large model's collection after each block (L.collect: a device keeps its allocator's cache)
function Net:collect_garbage() L.collect(self.device) end

-- the 1x77xD prompt embeddings -> everything the blocks share
function Net:embed(n, timestep, enc, class_labels, cap)
  local pl = self.plan
  local tp = self:sinusoid(timestep, n, enc.device)
  local emb = self:temb_mlp("time_embedding", tp)
  if cap then cap.time_proj = tp; cap.time_embedding = emb end
  if pl.class_embed then
    if class_labels == nil then error("unet: this model (stage II) needs class_labels (the noise level)", 3) end
    local cp   -- stage II's constant noise level on a device: kept per (value, n), so a capture copies nothing
    if type(class_labels) == "number" and enc.device ~= "cpu" then
      local key = ("%s/%d/%s"):format(class_labels, n, enc.device)
      self._labels = self._labels or {}
      cp = self._labels[key]
      if not cp then cp = self:sinusoid(class_labels, n, enc.device); self._labels[key] = cp end
    else
      cp = self:sinusoid(class_labels, n, enc.device)
    end
    local ce = self:temb_mlp("class_embedding", cp)
    if cap then cap.class_time_proj = cp; cap.class_embedding = ce end
    emb = emb + ce
  end
  if pl.add_embed then
    local ae = self:add_embedding(enc)
    if cap then cap.add_embedding = ae end
    emb = emb + ae
  end
  if pl.time_embed_act then emb = act_fn(pl.time_embed_act)(emb) end
  local ctx = enc
  if pl.hid_proj then ctx = self:linear("encoder_hid_proj", enc) end
  if cap then cap.emb = emb; cap.encoder_hid_proj = ctx end
  return emb, ctx
end

function Net:forward(sample, timestep, enc, class_labels, cap)
  local pl = self.plan
  if not fdm.is_tensor(sample) or sample:dim() ~= 4 then
    error(("unet: the sample must be a tensor [N, %d, H, W], got %s"):format(pl.in_channels,
      fdm.is_tensor(sample) and L.shape_str(sample.shape) or type(sample)), 2)
  end
  if sample.dtype ~= "float32" then error(("unet: the sample must be float32, got %s"):format(sample.dtype), 2) end
  if not fdm.is_tensor(enc) or enc:dim() ~= 3 then
    error(("unet: prompt embeddings must be a tensor [N, L, %d] (model:encode(prompt)), got %s"):format(pl.context_dim,
      fdm.is_tensor(enc) and L.shape_str(enc.shape) or type(enc)), 2)
  end
  local n = sample.shape[1]
  if sample.shape[2] ~= pl.in_channels then
    error(("unet: the sample has %d channels, the model takes %d"):format(sample.shape[2], pl.in_channels), 2)
  end
  local f = 2 ^ (pl.nb - 1)
  if sample.shape[3] % f ~= 0 or sample.shape[4] % f ~= 0 then
    error(("unet: the sample's size %dx%d is not a multiple of %d"):format(sample.shape[3], sample.shape[4], f), 2)
  end
  if enc.shape[1] ~= n then
    if enc.shape[1] == 1 then enc = enc:expand(n, enc.shape[2], enc.shape[3]) else
      error(("unet: %d prompt embeddings for %d images"):format(enc.shape[1], n), 2)
    end
  end
  if enc.shape[3] ~= pl.context_dim then
    error(("unet: prompt embeddings of width %d, the model takes %d"):format(enc.shape[3], pl.context_dim), 2)
  end
  local emb, ctx = self:embed(n, timestep, enc, class_labels, cap)
  if pl.center_input then sample = sample * 2 - 1 end
  local h = self:conv("conv_in", sample, (pl.kin - 1) // 2)
  if cap then cap.conv_in = h end
  local skips = { h }
  -- a map used up is freed at once, unless a test captures it (cap); a skip's
  -- maps are freed where the up path concatenates them
  local function used_up(t) if not cap then t:free() end end
  local function replace(old, new)
    used_up(old)
    return new
  end
  for i, b in ipairs(pl.down) do
    local nres = 0
    local function res(t)
      skips[#skips + 1] = t
      if cap then cap[("down_blocks.%d.res.%d"):format(i - 1, nres)] = t end
      nres = nres + 1
    end
    for j, r in ipairs(b.resnets) do
      h = self:resnet(r, h, emb, pl.out_scale)
      if cap then cap[("detail.down_blocks.%d.resnets.%d"):format(i - 1, j - 1)] = h end
      if b.attentions[j] then
        h = replace(h, self:attention(b.attentions[j], h, ctx))
        if cap then cap[("detail.down_blocks.%d.attentions.%d"):format(i - 1, j - 1)] = h end
      end
      res(h)
    end
    if b.down then
      h = self:resnet(b.down, h, emb, pl.out_scale)
      if cap then cap[("detail.down_blocks.%d.downsamplers.0"):format(i - 1)] = h end
      res(h)
    end
    if cap then cap[("down_blocks.%d"):format(i - 1)] = h end
    if self.collect then self:collect_garbage() end
  end
  local m = pl.mid
  h = self:resnet(m.resnets[1], h, emb, pl.mid_scale)
  if cap then cap["detail.mid_block.resnets.0"] = h end
  h = replace(h, self:attention(m.attentions[1], h, ctx))
  if cap then cap["detail.mid_block.attentions.0"] = h end
  h = replace(h, self:resnet(m.resnets[2], h, emb, pl.mid_scale))
  if cap then cap["detail.mid_block.resnets.1"] = h; cap.mid_block = h end
  for i, b in ipairs(pl.up) do
    for j, r in ipairs(b.resnets) do
      local s = table.remove(skips)
      local hs = fdm.cat({ h, s }, 2)
      used_up(h)
      used_up(s)
      h = swap(hs, self:resnet(r, hs, emb, pl.out_scale))
      if cap then cap[("detail.up_blocks.%d.resnets.%d"):format(i - 1, j - 1)] = h end
      if b.attentions[j] then
        h = replace(h, self:attention(b.attentions[j], h, ctx))
        if cap then cap[("detail.up_blocks.%d.attentions.%d"):format(i - 1, j - 1)] = h end
      end
    end
    if b.up then
      h = replace(h, self:resnet(b.up, h, emb, pl.out_scale))
      if cap then cap[("detail.up_blocks.%d.upsamplers.0"):format(i - 1)] = h end
    end
    if cap then cap[("up_blocks.%d"):format(i - 1)] = h end
    if self.collect then self:collect_garbage() end
  end
  h = replace(h, self:gn("conv_norm_out", h, pl.groups, pl.eps))
  if cap then cap.conv_norm_out = h end
  h = replace(h, self.act(h))
  if cap then cap.conv_act = h end
  h = replace(h, self:conv("conv_out", h, (pl.kout - 1) // 2))
  if cap then cap.output = h end
  return h
end

Net.__call = function(self, ...) return self:forward(...) end

-- moves every parameter to dev ("cpu", "cuda", ...), keeping its dtype: the
-- memory-mapped float16 / bfloat16 matrices are copied to the device as they
-- are (F.linear / F.conv2d widen them there as on the CPU), and the mapping
-- is dropped with the CPU tensor once nothing else holds it
function Net:to(dev)
  if self.device == dev or (self.device == nil and dev == "cpu") then return self end
  L.check_device_memory(L.bytes_to_move(self.spec, self.p, dev), dev, "deepfloyd: the UNet")
  self._sin_table, self._labels = nil, nil   -- device caches of the sinusoids: no memory left behind
  for _, e in ipairs(self.spec) do
    local name = e[1]
    local t = self.p[name]
    if t.device ~= dev then self.p[name] = t:to(dev) end
  end
  self.device = dev
  collectgarbage()
  collectgarbage()
  return self
end

-- loads DIR/unet (or DIR itself when it holds config.json)
function U.load(dir, opts)
  opts = opts or {}
  local udir = dir
  if not L.exists(dir .. "/config.json") and L.exists(dir .. "/unet/config.json") then udir = dir .. "/unet" end
  if not L.exists(udir .. "/config.json") then
    error(("unet: no config.json in '%s' or '%s/unet'"):format(dir, dir), 0)
  end
  local cfg = L.read_json(udir .. "/config.json", "unet")
  local spec = U.spec(cfg)
  local params, files = L.weights(udir, { base = "diffusion_pytorch_model", variant = opts.variant })
  local net = U.new(cfg, params, { what = "unet '" .. udir .. "'" })
  net.dir, net.files = udir, files
  return net
end

return U
