-- DeepFloyd IF in fdm: the tiny random-weight stage I / stage II UNets and the
-- T5 encoder of tests/data/deepfloyd-tiny (laid out like the published
-- folders, references from diffusers 0.21.4 / transformers 4.33.3), loaded
-- through the same loader a real folder goes through, against every golden
-- tensor. Tolerance: max|fdm - ref| <= tol * max|ref|, against the pure
-- float64 reference where there is one (else the float32 run): 1e-5 for the
-- UNets (their own float32-vs-float64 spread is up to 8.6e-6, the sinusoid),
-- 5e-6 for T5 (spread 6.5e-7). The stated sensitivities (timestep - 1 moves the
-- output by 9.4e-4, GroupNorm eps 1e-6 by 8.9e-4, ...) are all far above these.
local fdm = require "fdm"
local U = require "fdm.deepfloyd.unet"
local T5 = require "fdm.deepfloyd.t5"
local L = require "fdm.deepfloyd.loader"

local ROOT = "tests/data/deepfloyd-tiny"

local H = require "helpers"
local rel = H.rel_max

local function golden_names(g)
  local names = {}
  for k in pairs(g) do
    local b = k:match("^(.*)_f64$") or k:match("^(.*)_f32$")
    if b then names[b] = true end
  end
  local list = {}
  for k in pairs(names) do list[#list + 1] = k end
  table.sort(list)
  return list
end

for _, st in ipairs { "if-i", "if-ii" } do
  describe("deepfloyd " .. st .. " UNet", function()
    local dir = ROOT .. "/" .. st
    local net = U.load(dir)
    local g = fdm.io.load_safetensors(dir .. "/golden.safetensors")
    local cap = {}
    fdm.no_grad(function()
      return net(g["input.sample"], g["input.timestep"], g["input.encoder_hidden_states"], g["input.class_labels"], cap)
    end)
    -- later spec files measure memory: drop what this file holds
    teardown(function() net, g, cap = nil, nil, nil; collectgarbage(); collectgarbage() end)
    for _, name in ipairs(golden_names(g)) do
      it(name .. " matches within 1e-5 of max|ref|", function()
        local ref = g[name .. "_f64"] or g[name .. "_f32"]
        assert.is_not_nil(cap[name], "not captured: " .. name)
        assert.are.same(ref.shape, cap[name].shape)
        local d = rel(cap[name], ref)
        assert.is_true(d <= 1e-5, ("%s: %.3e"):format(name, d))
      end)
    end
    it("frees its intermediate maps as it goes (a ResNet or attention block leaves only its output alive)", function()
      -- with the collector stopped, each block's call may leave alive its
      -- output and its time conditioning's tensors, a few floats per (image,
      -- channel); what it used up is freed at once (before: 10 maps of the
      -- output's size from a ResNet block, 13-26 from an attention block:
      -- 40-8195 floats per (image, channel) here)
      local args = { g["input.sample"], g["input.timestep"], g["input.encoder_hidden_states"], g["input.class_labels"] }
      local run = function(c) return fdm.no_grad(function() return net(args[1], args[2], args[3], args[4], c) end) end
      local worst, calls = {}, {}
      for _, block in ipairs { "resnet", "attention" } do
        worst[block], calls[block] = 0, 0
        net[block] = function(self, ...)
          local live0 = fdm.memory()
          local out = U.Net[block](self, ...)
          local per_nc = (fdm.memory() - live0 - out:numel() * 4) / (out.shape[1] * out.shape[2] * 4)
          worst[block], calls[block] = math.max(worst[block], per_nc), calls[block] + 1
          return out
        end
      end
      collectgarbage("stop")
      local ok, out = pcall(run, nil)
      collectgarbage("restart")
      net.resnet, net.attention = nil, nil
      assert(ok, out)
      for block, w in pairs(worst) do
        assert.is_true(calls[block] >= (block == "resnet" and 8 or 2), block)
        assert.is_true(w <= 16, ("the %s block left %.1f floats per (image, channel) alive besides its output"):format(block, w))
      end
      -- the maps the forward frees (unless captured) change nothing
      assert.are.equal(0, (out - run({})):abs():max():item())
    end)
    it("has the input gradient of a finite difference (the freed maps leave autograd's own references)", function()
      local x0, t = g["input.sample"], g["input.timestep"]
      local e, c = g["input.encoder_hidden_states"], g["input.class_labels"]
      local x = x0:clone():requires_grad_(true)
      net(x, t, e, c):sum():backward()
      fdm.manual_seed(3)
      local d = fdm.randn(table.unpack(x0.shape))
      local f = function(v) return fdm.no_grad(function() return net(v, t, e, c):sum():item() end) end
      -- eps 3e-3: stage II bends at 1e-2 already (the difference moves by 6 %), while
      -- float32 sums of the output resolve about 0.5 % of the quotient
      local eps = 3e-3
      local fd = (f(x0 + d * eps) - f(x0 - d * eps)) / (2 * eps)
      local an = (x.grad * d):sum():item()
      assert.is_true(math.abs(fd - an) <= 2e-2 * math.abs(an), ("finite difference %.6g, gradient %.6g"):format(fd, an))
    end)
    it("counts the parameters of the folder", function()
      assert.are.equal(st == "if-i" and 1728534 or 1241494, net.num_parameters)
    end)
    it("gives the same output with float16 weights up to their rounding", function()
      local params = L.weights(dir .. "/unet")
      local half = {}
      for k, v in pairs(params) do half[k] = v:dim() >= 2 and v:half() or v end
      local net16 = U.new(net.cfg, half)
      local out = fdm.no_grad(function()
        return net16(g["input.sample"], g["input.timestep"], g["input.encoder_hidden_states"], g["input.class_labels"])
      end)
      local d = rel(out, g.output_f64)
      assert.is_true(d < 2e-2, ("fp16 weights: %.3e"):format(d))
    end)
  end)
end

describe("deepfloyd T5 encoder", function()
  local dir = ROOT .. "/text_encoder"
  local enc = T5.load(dir)
  local g = fdm.io.load_safetensors(dir .. "/golden.safetensors")
  local cap = {}
  fdm.no_grad(function() return enc(g.input_ids, g.attention_mask, cap) end)
  teardown(function() enc, g, cap = nil, nil, nil; collectgarbage(); collectgarbage() end)
  it("relative position buckets equal transformers' (77 x 77)", function()
    local b = T5.bucket_table(77, 77, enc.cfg)
    assert.are.equal(0, (b - g.relative_position_bucket:reshape(77 * 77)):abs():max():item())
  end)
  for _, name in ipairs { "embed_tokens", "position_bias", "block.0", "block.1", "last_hidden_state" } do
    it(name .. " matches within 5e-6 of max|ref|", function()
      local d = rel(cap[name], g[name .. "_f64"])
      assert.is_true(d <= 5e-6, ("%s: %.3e"):format(name, d))
    end)
  end
  it("rms_norm has a gradient (composition of ops)", function()
    local x = fdm.randn(3, 8):requires_grad_()
    local w = fdm.randn(8):requires_grad_()
    T5.rms_norm(x, w, 1e-6):sum():backward()
    assert.is_not_nil(x.grad)
    assert.is_not_nil(w.grad)
  end)
end)

-- config keys whose effect the tiny folders do not exercise (their configs
-- keep diffusers' defaults), each against diffusers 0.21.4's rule
describe("deepfloyd UNet config rules", function()
  local function cfg_with(edit)
    local c = L.json_decode(L.read_file(ROOT .. "/if-i/unet/config.json"))
    edit(c)
    return c
  end
  local function has_self_kv(spec, pre)
    for _, e in ipairs(spec) do if e[1] == pre .. ".to_k.weight" then return true end end
    return false
  end
  local function attention_prefixes(spec)
    local seen, list = {}, {}
    for _, e in ipairs(spec) do
      local pre = e[1]:match("^(.-%.attentions%.%d+)%.to_q%.weight$")
      if pre and not seen[pre] then seen[pre] = true; list[#list + 1] = pre end
    end
    return list
  end

  it("only_cross_attention: a single true drops self keys everywhere, the mid block included", function()
    local spec = U.spec(cfg_with(function(c) c.only_cross_attention = true end))
    local pres = attention_prefixes(spec)
    assert.is_true(#pres >= 3)
    for _, pre in ipairs(pres) do assert.is_false(has_self_kv(spec, pre), pre) end
  end)

  it("only_cross_attention: a per-block list leaves the mid block with self keys unless mid_block_only_cross_attention says", function()
    local spec = U.spec(cfg_with(function(c) c.only_cross_attention = { true, true, true, true } end))
    assert.is_true(has_self_kv(spec, "mid_block.attentions.0"))
    assert.is_false(has_self_kv(spec, "down_blocks.3.attentions.0"))
    spec = U.spec(cfg_with(function(c)
      c.only_cross_attention = { true, true, true, true }; c.mid_block_only_cross_attention = true
    end))
    assert.is_false(has_self_kv(spec, "mid_block.attentions.0"))
    spec = U.spec(cfg_with(function(c) c.mid_block_only_cross_attention = true end))
    assert.is_false(has_self_kv(spec, "mid_block.attentions.0"))
    assert.is_true(has_self_kv(spec, "down_blocks.3.attentions.0"))
  end)

  it("an only-cross attention layer attends to the prompt alone (against plain softmax(QK^T/sqrt(d))V)", function()
    local cfg = cfg_with(function(c) c.only_cross_attention = true end)
    local spec = U.spec(cfg)
    fdm.manual_seed(3)
    local net = U.new(cfg, U.random_params(spec), { collect = false })
    local a = net.plan.mid.attentions[1]
    local B, C, H, W, Lc = 2, a.c, 2, 2, 5
    local x = fdm.randn({ B, C, H, W })
    local ctx = fdm.randn({ B, Lc, net.plan.context_dim })
    local got = net:attention(a, x, ctx)
    -- the reference, one image and one head at a time from plain ops
    local p, F = net.p, fdm.F
    local h = F.group_norm(x, net.plan.groups, p[a.pre .. ".group_norm.weight"], p[a.pre .. ".group_norm.bias"], 1e-5)
    local cn = F.group_norm(ctx:transpose(2, 3), 32, p[a.pre .. ".norm_cross.weight"], p[a.pre .. ".norm_cross.bias"], 1e-5)
    local function lin(pre, t) return t:matmul(p[pre .. ".weight"]:float():t()) + p[pre .. ".bias"] end
    local worst = 0
    for b = 1, B do
      local tok = h:narrow(1, b, 1):reshape(C, H * W):t()        -- [HW, C]
      local c = cn:narrow(1, b, 1):reshape(cn.shape[2], Lc):t()  -- [Lc, D]
      local q, k, v = lin(a.pre .. ".to_q", tok), lin(a.pre .. ".add_k_proj", c), lin(a.pre .. ".add_v_proj", c)
      local heads = {}
      for hh = 1, a.heads do
        local qs, ks, vs = q:narrow(2, (hh - 1) * a.hd + 1, a.hd), k:narrow(2, (hh - 1) * a.hd + 1, a.hd),
          v:narrow(2, (hh - 1) * a.hd + 1, a.hd)
        heads[hh] = F.softmax(qs:matmul(ks:t()) / math.sqrt(a.hd), 2):matmul(vs)
      end
      local o = lin(a.pre .. ".to_out.0", fdm.cat(heads, 2)):t():reshape(C, H, W) + x:narrow(1, b, 1):reshape(C, H, W)
      worst = math.max(worst, rel(got:narrow(1, b, 1):reshape(C, H, W), o))
    end
    assert.is_true(worst < 1e-5, ("rel %.3g"):format(worst))
  end)

  it("center_input_sample maps the sample to 2x - 1 first", function()
    local g = fdm.io.load_safetensors(ROOT .. "/if-i/golden.safetensors")
    local plain = U.load(ROOT .. "/if-i")
    local cfg = cfg_with(function(c) c.center_input_sample = true end)
    local centred = U.new(cfg, plain.p, { collect = false })
    local x, t, e = g["input.sample"], g["input.timestep"], g["input.encoder_hidden_states"]
    local a = fdm.no_grad(function() return centred(x, t, e) end)
    local b = fdm.no_grad(function() return plain(x * 2 - 1, t, e) end)
    assert.are.equal(0, (a - b):abs():max():item())
  end)

  it("names a config number that is not what diffusers would build (type, range, divisibility)", function()
    local cases = {
      { function(c) c.layers_per_block = -3 end, "layers_per_block[1] must be an integer >= 1, got -3" },
      { function(c) c.layers_per_block = "two" end, "layers_per_block[1] must be an integer >= 1, got 'two'" },
      { function(c) c.layers_per_block = { 2, 2, 2.5, 2 } end, "layers_per_block[3] must be an integer >= 1, got 2.5" },
      { function(c) c.block_out_channels = { 16, 32, 1e12, 64 } end, "block_out_channels[3] must be an integer >= 1" },
      { function(c) c.attention_head_dim = 0 end, "attention_head_dim[1] must be an integer >= 1, got 0" },
      { function(c) c.norm_num_groups = 0 end, "norm_num_groups must be an integer >= 1, got 0" },
      { function(c) c.norm_num_groups = 7 end, "norm_num_groups 7 does not divide block_out_channels[1] = 16" },
      { function(c) c.norm_eps = "x" end, "norm_eps must be a positive number, got 'x'" },
      { function(c) c.resnet_out_scale_factor = 0 end, "resnet_out_scale_factor must be a positive number, got 0" },
      { function(c) c.in_channels = 0 end, "in_channels must be an integer >= 1, got 0" },
      { function(c) c.conv_out_kernel = 2 end, "conv_out_kernel must be odd" },
      { function(c) c.addition_embed_type_num_heads = 0 end, "addition_embed_type_num_heads must be an integer >= 1, got 0" },
      { function(c) c.encoder_hid_dim = -64 end, "encoder_hid_dim must be an integer >= 1, got -64" },
      { function(c) c.cross_attention_dim = 64.5 end, "cross_attention_dim must be an integer >= 1, got 64.5" },
    }
    for _, k in ipairs(cases) do
      local ok, e = pcall(U.spec, cfg_with(k[1]))
      assert.is_false(ok, k[2])
      assert.truthy(tostring(e):find("unet config: " .. k[2], 1, true), tostring(e))
    end
  end)

  it("names a T5 or scheduler config number that is missing or out of range", function()
    local t5cfg = L.json_decode(L.read_file(ROOT .. "/text_encoder/config.json"))
    local function t5_with(k, v) local c = {} for a, b in pairs(t5cfg) do c[a] = b end c[k] = v return c end
    for _, k in ipairs {
      { "num_heads", 0, "t5 config: num_heads must be an integer >= 1, got 0" },
      { "d_kv", 16.5, "t5 config: d_kv must be an integer >= 1, got 16.5" },
      { "num_layers", "2", "t5 config: num_layers must be an integer >= 1, got '2'" },
      { "relative_attention_num_buckets", -1, "relative_attention_num_buckets must be an integer >= 1, got -1" },
      { "layer_norm_epsilon", 0, "t5 config: layer_norm_epsilon must be a positive number, got 0" },
      { "feed_forward_proj", 7, "t5 config: feed_forward_proj must be a string, got 7" },
      { "d_model", L.null, "t5 config: 'd_model' is missing" },
    } do
      local ok, e = pcall(T5.config, t5_with(k[1], k[2]))
      assert.is_false(ok, k[3])
      assert.truthy(tostring(e):find(k[3], 1, true), tostring(e))
    end
    local S = require "fdm.deepfloyd.scheduler"
    for _, k in ipairs {
      { { num_train_timesteps = -5 }, "scheduler: num_train_timesteps must be an integer in 2..100000, got -5" },
      { { num_train_timesteps = 1e9 }, "num_train_timesteps must be an integer in 2..100000" },
      { { dynamic_thresholding_ratio = 1.5 }, "dynamic_thresholding_ratio must be a finite number in [0, 1], got 1.5" },
      { { sample_max_value = -1 }, "scheduler: sample_max_value must be a positive number, got -1" },
      { { thresholding = "yes" }, "scheduler: thresholding must be true or false, got yes" },
      { { steps_offset = -1 }, "scheduler: steps_offset must be an integer >= 0, got -1" },
      { { beta_schedule = "linear", beta_end = 2 }, "scheduler: beta_end must be a finite number in [0, 1], got 2" },
    } do
      local ok, e = pcall(S.new, k[1])
      assert.is_false(ok, k[2])
      assert.truthy(tostring(e):find(k[2], 1, true), tostring(e))
    end
    S.new(L.json_decode(L.read_file(ROOT .. "/scheduler/scheduler_config.json")))   -- the real one still loads
  end)

  it("warns when the weights hold tensors the config does not use (a config of a smaller model)", function()
    local plain = U.load(ROOT .. "/if-i")
    local cfg = cfg_with(function(c) c.mid_block_only_cross_attention = true end)
    local out = H.capture_stderr(function() U.new(cfg, plain.p, { collect = false, what = "unet 'X'" }) end)
    assert.truthy(out:find("unet 'X': 4 tensors in the weights are not used by its config", 1, true), out)
    assert.truthy(out:find("mid_block.attentions.0.to_k.bias", 1, true), out)
    assert.are.equal("", H.capture_stderr(function() U.new(cfg_with(function() end), plain.p, { collect = false }) end))
  end)

  it("refuses num_attention_heads (as diffusers 0.21 does) and a class label table, rather than ignore them", function()
    for key, v in pairs { num_attention_heads = 8, num_class_embeds = 10 } do
      local ok, e = pcall(U.spec, cfg_with(function(c) c[key] = v end))
      assert.is_false(ok)
      assert.truthy(tostring(e):find(key, 1, true), key)
    end
  end)
end)

describe("deepfloyd loader errors", function()
  local tmp = os.tmpname()
  setup(function()
    os.remove(tmp)
    os.execute("mkdir -p " .. tmp .. "/unet")
  end)
  teardown(function() os.execute("rm -rf " .. tmp) end)
  local function cfg_text(mod)
    local s = L.read_file(ROOT .. "/if-i/unet/config.json")
    return mod and mod(s) or s
  end
  local function write(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end
  it("names missing weight files", function()
    write(tmp .. "/unet/config.json", cfg_text())
    local ok, e = pcall(U.load, tmp)
    assert.is_false(ok)
    assert.truthy(tostring(e):find("no weights in", 1, true))
  end)
  it("a cut weight file is named without a Lua position (the user's file is bad, not fdm)", function()
    write(tmp .. "/unet/config.json", cfg_text())
    local full = L.read_file(ROOT .. "/if-i/unet/diffusion_pytorch_model.safetensors")
    write(tmp .. "/unet/diffusion_pytorch_model.safetensors", full:sub(1, 100000))
    local ok, e = pcall(U.load, tmp)
    os.remove(tmp .. "/unet/diffusion_pytorch_model.safetensors")
    assert.is_false(ok)
    assert.are.equal(1, tostring(e):find("load_safetensors: '" .. tmp .. "/unet/diffusion_pytorch_model.safetensors'", 1, true), e)
    assert.truthy(tostring(e):find("file truncated?", 1, true), e)
  end)
  it("names a PyTorch pickle it will not read", function()
    write(tmp .. "/unet/config.json", cfg_text())
    write(tmp .. "/unet/diffusion_pytorch_model.bin", "not read")
    local ok, e = pcall(U.load, tmp)
    os.remove(tmp .. "/unet/diffusion_pytorch_model.bin")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("it has diffusion_pytorch_model.bin, a PyTorch pickle", 1, true), e)
    os.execute("mkdir -p " .. tmp .. "/te")
    write(tmp .. "/te/pytorch_model.bin.index.json", "{}")
    ok, e = pcall(L.weights, tmp .. "/te", { base = "model" })
    os.execute("rm -rf " .. tmp .. "/te")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("it has pytorch_model.bin.index.json", 1, true), e)
  end)
  it("names an unsupported block type", function()
    write(tmp .. "/unet/config.json", cfg_text(function(s) return (s:gsub('"ResnetDownsampleBlock2D"', '"CrossAttnDownBlock2D"', 1)) end))
    local ok, e = pcall(U.load, tmp)
    assert.is_false(ok)
    assert.truthy(tostring(e):find("CrossAttnDownBlock2D", 1, true))
  end)
  it("lists missing tensors and wrong shapes", function()
    write(tmp .. "/unet/config.json", cfg_text(function(s) return (s:gsub('"layers_per_block": 2', '"layers_per_block": 3')) end))
    os.execute("cp " .. ROOT .. "/if-i/unet/diffusion_pytorch_model.safetensors " .. tmp .. "/unet/")
    local ok, e = pcall(U.load, tmp)
    assert.is_false(ok)
    e = tostring(e)
    assert.truthy(e:find("missing tensors", 1, true))
    assert.truthy(e:find("down_blocks.0.resnets.2.conv1.weight", 1, true))
    assert.truthy(e:find("wrong shape", 1, true))
  end)
  it("reads sharded weights through their index json", function()
    local params = L.weights(ROOT .. "/if-i/unet")
    local a, b = {}, {}
    local i = 0
    local map = {}
    for k, v in pairs(params) do
      i = i + 1
      if i % 2 == 0 then a[k] = v:contiguous(); map[k] = "diffusion_pytorch_model-00001-of-00002.safetensors"
      else b[k] = v:contiguous(); map[k] = "diffusion_pytorch_model-00002-of-00002.safetensors" end
    end
    os.execute("rm -f " .. tmp .. "/unet/*.safetensors")
    write(tmp .. "/unet/config.json", cfg_text())
    fdm.io.save_safetensors(tmp .. "/unet/diffusion_pytorch_model-00001-of-00002.safetensors", a)
    fdm.io.save_safetensors(tmp .. "/unet/diffusion_pytorch_model-00002-of-00002.safetensors", b)
    local parts = {}
    for k, f in pairs(map) do parts[#parts + 1] = ('"%s": "%s"'):format(k, f) end
    write(tmp .. "/unet/diffusion_pytorch_model.safetensors.index.json", '{"metadata": {}, "weight_map": {' .. table.concat(parts, ", ") .. "}}")
    local net = U.load(tmp)
    assert.are.equal(1728534, net.num_parameters)
  end)
  it("reads an fp16 variant named as diffusers names it (shards through .safetensors.index.fp16.json)", function()
    local params = L.weights(ROOT .. "/if-i/unet")
    local half, map = {}, {}
    for k, v in pairs(params) do
      half[k] = v:dim() >= 2 and v:half() or v:contiguous()
      map[#map + 1] = ('"%s": "diffusion_pytorch_model.fp16-00001-of-00001.safetensors"'):format(k)
    end
    os.execute("rm -f " .. tmp .. "/unet/*.safetensors " .. tmp .. "/unet/*.json")
    write(tmp .. "/unet/config.json", cfg_text())
    fdm.io.save_safetensors(tmp .. "/unet/diffusion_pytorch_model.fp16-00001-of-00001.safetensors", half)
    write(tmp .. "/unet/diffusion_pytorch_model.safetensors.index.fp16.json", '{"weight_map": {' .. table.concat(map, ", ") .. "}}")
    local net = U.load(tmp, { variant = "fp16" })
    assert.are.equal("float16", net.p["conv_in.weight"].dtype)
    local net2 = U.load(tmp) -- no plain file: the fp16 variant is found without asking
    assert.are.equal(1728534, net2.num_parameters)
  end)
  it("refuses a model larger than the available memory", function()
    local ok, e = pcall(L.check_memory, 1e15, "a test model")
    if os.getenv("FDM_SKIP_MEMORY_CHECK") then return end
    assert.is_false(ok)
    assert.truthy(tostring(e):find("memory is available", 1, true))
  end)
end)
