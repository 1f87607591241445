-- bench/deepfloyd.lua: speed of DeepFloyd IF in fdm without the real weights:
-- the real configurations instantiated with random weights (half-precision
-- matrices, as the published fp16 files load), one at a time.
--
--   ./build/fdm bench/deepfloyd.lua --config if-i-m  [--dtype float16] [--steps 2] [--batch 2]
--   ./build/fdm bench/deepfloyd.lua --config if-i-xl | if-ii-m | t5-xxl | t5-xxl-layers --layers 6
--   ./build/fdm bench/deepfloyd.lua --config if-i-m --device cuda --precision bf16
--
-- Prints the parameter count, seconds to build, seconds per UNet step (batch 2:
-- the conditional and unconditional pass of CFG; 64x64 for stage I, 256x256 for
-- stage II) or per prompt embedding (77 tokens), and the peak resident memory;
-- on a device, also the device memory it holds (live + cached by fdm's
-- allocator: the high-water mark of what it reserved, as PyTorch's
-- max_memory_reserved). --precision bf16/fp16 runs the convolutions and
-- matrix products on half operands (fdm.autocast, as IF models'
-- set_precision: T5 on bf16 for either).
--
-- Configurations. T5-XXL is t5-v1_1-xxl's encoder (d_model 4096, d_ff 10240,
-- 64 heads of 64, 24 layers, vocab 32128: 4.76 B parameters). The published
-- IF UNet configs were not at hand; these stand-ins have IF's block structure
-- and match the published parameter counts within 1%: IF-I-M 400 M, IF-I-XL
-- 4.3 B, IF-II-M 450 M (counts printed by the script).
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local U = require "fdm.deepfloyd.unet"
local T5 = require "fdm.deepfloyd.t5"
local L = require "fdm.deepfloyd.loader"

local args = cli.parse_or_exit(arg, {
  name = "bench_deepfloyd", script = "bench/deepfloyd.lua", common = false,
  summary = "seconds per UNet step / prompt embedding of the IF configurations with random weights",
  options = {
    { "config", "choice", "if-i-m", "configuration", choices = { "if-i-m", "if-i-xl", "if-ii-m", "t5-xxl" } },
    { "dtype", "choice", "float16", "weight storage", choices = { "float16", "bfloat16", "float32" } },
    { "steps", "int", 2, "timed UNet steps / prompt embeddings (after one warm-up)", min = 1 },
    { "batch", "int", nil, "UNet batch (default 2: one CFG step of one image); T5: prompts per call (default 1; " ..
      "the time printed is per prompt)", min = 1 },
    { "layers", "int", 0, "T5: build only this many layers and scale the time to 24 (0 = all)", min = 0 },
    { "device", "string", "cpu", "device (the random weights are drawn there)" },
    cli.PRECISION,
    { "profile", "flag", false, "time every kernel of the last timed step (fdm.profile) and print the table" },
    { "graph", "flag", false, "UNet: the step as a CUDA graph (warm-up eager, step 1 captured, then replays; " ..
      "emulated on a device without graphs, e.g. the tests' fake one)" },
    { "write", "string", nil, "instead of timing, write the random weights into DIR as a published folder would hold " ..
      "them (unet/ or text_encoder/, fp16 files, T5 in shards; scheduler/ and tokenizer/ from the tiny test folders), " ..
      "to run the whole pipeline at full size" },
  },
})

local function stage1(boc)
  return { block_out_channels = boc, layers_per_block = 3, attention_head_dim = 64, cross_attention_dim = boc[#boc],
    encoder_hid_dim = 4096, encoder_hid_dim_type = "text_proj", addition_embed_type = "text", addition_embed_type_num_heads = 64,
    act_fn = "gelu", norm_num_groups = 32, resnet_time_scale_shift = "scale_shift", in_channels = 3, out_channels = 6,
    down_block_types = { "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D" },
    up_block_types = { "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D" },
    mid_block_type = "UNetMidBlock2DSimpleCrossAttn", cross_attention_norm = "group_norm", sample_size = 64 }
end
local function stage2()
  local c = stage1({ 128, 256, 512, 768, 768 })
  c.layers_per_block = { 2, 2, 3, 3, 3 }
  c.in_channels = 6; c.class_embed_type = "timestep"; c.time_embedding_dim = 512; c.time_embedding_act_fn = "gelu"
  c.resnet_skip_time_act = true; c.resnet_out_scale_factor = 1.4142271248762552; c.mid_block_scale_factor = 1.4142271248762552
  c.sample_size = 256
  c.down_block_types = { "ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D",
    "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D" }
  c.up_block_types = { "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D",
    "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D" }
  return c
end
local CONFIGS = {
  ["if-i-m"] = function() return stage1({ 192, 384, 576, 832 }) end,
  ["if-i-xl"] = function() return stage1({ 704, 1408, 2112, 2816 }) end,
  ["if-ii-m"] = stage2,
  ["t5-xxl"] = function()
    return { d_model = 4096, d_ff = 10240, d_kv = 64, num_heads = 64, num_layers = 24, vocab_size = 32128,
      feed_forward_proj = "gated-gelu", dense_act_fn = "gelu_new", layer_norm_epsilon = 1e-6,
      relative_attention_num_buckets = 32, relative_attention_max_distance = 128 }
  end,
}

local function gb(b) return (b or 0) / 1e9 end
local cfg = CONFIGS[args.config]()
local is_t5 = args.config == "t5-xxl"
if args.graph then
  if is_t5 then cli.usage_error("--graph: the UNet configurations only (if-i-m, if-i-xl, if-ii-m)") end
  if args.device == "cpu" then cli.usage_error("--graph: CUDA graphs need --device cuda (the CPU has none)") end
  if args.profile then cli.usage_error("--graph and --profile: a replay has no per-kernel times; profile without --graph") end
end
local full_layers = cfg.num_layers
if is_t5 and args.layers > 0 then
  if args.layers > full_layers then cli.usage_error(("--layers %d: T5-XXL has %d"):format(args.layers, full_layers)) end
  cfg.num_layers = args.layers
end
local spec = is_t5 and (T5.spec(cfg)) or (U.spec(cfg))
local nparam = L.spec_params(spec)
local es = args.dtype == "float32" and 4 or 2
print(("%s: %.1f M parameters (%s matrices: %.2f GB)%s"):format(args.config, nparam / 1e6, args.dtype, nparam * es / 1e9,
  (is_t5 and cfg.num_layers ~= full_layers) and (" [%d of %d layers built]"):format(cfg.num_layers, full_layers) or ""))
L.check_memory(nparam * es * 1.1, args.config)

fdm.manual_seed(0)
local t0 = fdm.time()
local params = U.random_params(spec, { dtype = args.dtype, device = args.device })
collectgarbage(); collectgarbage()
fdm.empty_cache() -- the float32 draws the half matrices were rounded from
local build_peak = L.peak_rss()

-- --write: the random weights as a folder in the published layout, loaded by
-- the same loader as a real one (fp16 files as the published variants hold
-- them: every tensor in half precision; T5 in two shards named by an index)
if args.write then
  local json = require "fdm.json"
  local dir, tiny = args.write, (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../tests/data/deepfloyd-tiny"
  local function sh(cmd)
    if not os.execute(cmd) then cli.usage_error(("--write %s: cannot create the folder or copy into it (%s)"):format(dir, cmd)) end
  end
  local function write(path, text)
    local f, e = io.open(path, "wb")
    if not f then cli.usage_error(("--write %s: %s"):format(dir, e)) end
    f:write(text); f:close()
  end
  local half = {}
  for k, t in pairs(params) do half[k] = t.dtype == "float32" and t:half() or t end
  params = nil
  local stage2 = cfg.class_embed_type ~= nil
  sh(("mkdir -p '%s/scheduler' '%s/tokenizer' && cp %s/scheduler/scheduler_config.json '%s/scheduler/' && cp %s/tokenizer/spiece.model %s/tokenizer/tokenizer_config.json %s/tokenizer/special_tokens_map.json '%s/tokenizer/'")
    :format(dir, dir, tiny, dir, tiny, tiny, tiny, dir))
  if is_t5 then
    sh(("mkdir -p '%s/text_encoder'"):format(dir))
    local c = { architectures = { "T5EncoderModel" }, model_type = "t5", is_encoder_decoder = true, torch_dtype = "float16" }
    for k, v in pairs(cfg) do c[k] = v end
    write(dir .. "/text_encoder/config.json", json.encode(c))
    local names = {}
    for k in pairs(half) do names[#names + 1] = k end
    table.sort(names)
    local shards, map, total = { {}, {} }, {}, 0
    for i, k in ipairs(names) do
      local which = i <= #names // 2 and 1 or 2
      local file = ("model.fp16-%05d-of-00002.safetensors"):format(which)
      shards[which][k] = half[k]
      map[k] = file
      total = total + half[k]:numel() * 2
    end
    for i = 1, 2 do fdm.io.save_safetensors(("%s/text_encoder/model.fp16-%05d-of-00002.safetensors"):format(dir, i), shards[i]) end
    write(dir .. "/text_encoder/model.safetensors.index.fp16.json", json.encode({ metadata = { total_size = total }, weight_map = map }))
  else
    sh(("mkdir -p '%s/unet'"):format(dir))
    local c = { _class_name = "UNet2DConditionModel", _diffusers_version = "0.21.4" }
    for k, v in pairs(cfg) do c[k] = v end
    write(dir .. "/unet/config.json", json.encode(c))
    fdm.io.save_safetensors(dir .. "/unet/diffusion_pytorch_model.fp16.safetensors", half)
    if stage2 then
      sh(("mkdir -p '%s/image_noising_scheduler' && cp %s/scheduler/scheduler_config.json '%s/image_noising_scheduler/'")
        :format(dir, tiny, dir))
    end
  end
  if not L.exists(dir .. "/model_index.json") then
    write(dir .. "/model_index.json", json.encode({ _class_name = stage2 and "IFSuperResolutionPipeline" or "IFPipeline" }))
  end
  print(("wrote %s: %s, %.2f GB of float16 weights in %.1f s"):format(dir, is_t5 and "text_encoder/" or "unet/",
    nparam * 2 / 1e9, fdm.time() - t0))
  os.exit(0)
end
-- from here the peak counts the weights and the inference only (VmHWM reset)
local f = io.open("/proc/self/clear_refs", "w")
if f then f:write("5"); f:close() end
print(("random weights: %.1f s, rss %.2f GB"):format(fdm.time() - t0, gb(L.rss())))
local dev = args.device
local unet_cast, t5_cast = require("fdm.deepfloyd").autocast_of(args.precision)   -- as IF models
local function on_dev(t) return dev ~= "cpu" and t:to(dev) or t end

local times = {}
-- runs one timed call; the last one under fdm.profile with --profile; per: items the call did (the time
-- recorded is per item)
local function timed(i, f, per)
  local prof = args.profile and i == args.steps
  if prof then fdm.profile(true) end
  local ts = fdm.time()
  f()
  local dt = fdm.time() - ts
  if prof then
    fdm.profile(false)
    print(fdm.profile_report())
  end
  if i > 0 then times[#times + 1] = dt / (per or 1) end
  return dt
end
if is_t5 then
  local enc = T5.new(cfg, params)
  params = nil
  if dev ~= "cpu" then enc:to(dev) end
  collectgarbage()
  local B = args.batch or 1   -- prompts per call, as Model:encode_many batches them
  local ids = on_dev(fdm.randint(0, cfg.vocab_size, { B, 77 }))
  local mask = on_dev(fdm.ones(B, 77, { dtype = "int64" }))
  for i = 0, args.steps do
    local dt = timed(i, function()
      local h = fdm.no_grad(function() return fdm.autocast(t5_cast, function() return enc(ids, mask) end) end)
      local _ = h:sum():item()
    end, B)
    print(("  call %d (%d prompt%s): %.2f s%s"):format(i, B, B > 1 and "s" or "", dt, i == 0 and " (warm-up)" or ""))
  end
else
  local net = U.new(cfg, params)
  params = nil
  if dev ~= "cpu" then net:to(dev) end
  collectgarbage()
  local n = args.batch or 2
  local S = cfg.sample_size
  local x = on_dev(fdm.randn(n, cfg.in_channels, S, S))
  local enc = on_dev(fdm.randn(n, 77, 4096))
  local labels = cfg.class_embed_type and 250 or nil
  -- --graph: t as a device tensor (as a graphed sampler passes it), the step captured once, then replayed
  local t = args.graph and on_dev(fdm.tensor({ 500 }, { dtype = "int64" })) or 500
  local emulate = args.graph and not fdm.graph_supported({ device = dev })
  local function step() return fdm.no_grad(function() return fdm.autocast(unet_cast, function() return net(x, t, enc, labels) end) end) end
  local g, out
  for i = 0, args.steps do
    local dt = timed(i, function()
      if not args.graph or i == 0 then out = step()
      elseif not g then g, out = fdm.graph(step, { device = dev, emulate = emulate })
      else g:replay() end
      local _ = out:sum():item()
    end)
    print(("  step %d: %.2f s%s"):format(i, dt, i == 0 and " (warm-up)" or
      (args.graph and (i == 1 and " (captured)" or " (replayed)") or "")))
  end
  if emulate then print("  (graph emulated: no capture on device " .. dev .. ")") end
end
table.sort(times)
local med = times[(#times + 1) // 2]
local scale = (is_t5 and cfg.num_layers ~= full_layers) and (full_layers / cfg.num_layers) or 1
local devmem = ""
if dev ~= "cpu" then
  local st = fdm.backend_stats(dev)
  devmem = ("; %s memory %.2f GB (live %.2f + cached %.2f)"):format(dev, gb(st.live_bytes + st.cached_bytes),
    gb(st.live_bytes), gb(st.cached_bytes))
end
print(("%s: %s %.3f s (%s)%s on %s, %s%s; peak memory %.2f GB (while building the random weights: %.2f GB)%s; threads %s")
  :format(args.config,
  is_t5 and ("seconds per prompt embedding%s"):format((args.batch or 1) > 1 and (" (%d per call)"):format(args.batch) or "")
    or ("seconds per UNet step (batch %d, %dx%d)"):format(args.batch or 2, cfg.sample_size, cfg.sample_size),
  med * scale, #times == 1 and "one timed run" or #times == 2 and "the faster of 2" or
    ((#times % 2 == 0 and "lower median of %d" or "median of %d"):format(#times)), scale ~= 1 and (" (scaled from %d layers)"):format(cfg.num_layers) or "", dev,
  is_t5 and (t5_cast and "bf16" or "fp32") or args.precision, args.graph and ", CUDA graph" or "", gb(L.peak_rss()),
  gb(build_peak), devmem,
  os.getenv("OMP_NUM_THREADS") or "default"))
