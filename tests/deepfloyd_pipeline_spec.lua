-- DeepFloyd IF in fdm: the scheduler (diffusers 0.21.4 DDPMScheduler values),
-- the T5 tokenizer (transformers 4.33.3 slow T5Tokenizer ids), the Part A
-- model interface and scripts/sample.lua end to end on the tiny folders.
local fdm = require "fdm"
local S = require "fdm.deepfloyd.scheduler"
local Tok = require "fdm.deepfloyd.tokenizer"
local L = require "fdm.deepfloyd.loader"
local D = require "fdm.diffusion"

local ROOT = "tests/data/deepfloyd-tiny"
local FDM = os.getenv("FDM_BIN") or "./build/fdm"

local H = require "helpers"
local rel = H.rel_max

describe("deepfloyd scheduler", function()
  local s = S.load(ROOT .. "/scheduler")
  local g = fdm.io.load_safetensors(ROOT .. "/scheduler/golden.safetensors")
  local ts = g.timesteps:tolist()
  s:set_timesteps(ts)
  teardown(function() s, g = nil, nil; collectgarbage(); collectgarbage() end)
  it("betas, alphas and alphas_cumprod are diffusers' float32 values exactly", function()
    assert.are.equal(0, (s.betas - g.betas):abs():max():item())
    assert.are.equal(0, (s.alphas - g.alphas):abs():max():item())
    assert.are.equal(0, (s.alphas_cumprod - g.alphas_cumprod):abs():max():item())
  end)
  it("IFPipeline's timesteps: set_timesteps(n) of diffusers 0.21 per spacing, then -1", function()
    local function list(a, b, step) local l = {} for t = a, b, step do l[#l + 1] = t end l[#l + 1] = -1 return l end
    assert.are.same(list(950, 0, -50), s:pipeline_timesteps(20))         -- leading (IF's config)
    assert.are.same({ 666, 333, 0, -1 }, s:pipeline_timesteps(3))
    assert.are.same(list(980, 0, -20), s:pipeline_timesteps(50))
    local function with(cfg) local c = {} for k, v in pairs(s.config) do c[k] = v end for k, v in pairs(cfg) do c[k] = v end return S.new(c) end
    assert.are.same({ 751, 501, 251, 1, -1 }, with({ steps_offset = 1 }):pipeline_timesteps(4))
    -- np.round rounds half to even: 937.5 -> 938, 812.5 -> 812
    assert.are.same({ 999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61, -1 },
      with({ timestep_spacing = "trailing" }):pipeline_timesteps(16))
    assert.are.same({ 999, 666, 332, -1 }, with({ timestep_spacing = "trailing" }):pipeline_timesteps(3))
    assert.are.same({ 999, 749, 500, 250, 0, -1 }, with({ timestep_spacing = "linspace" }):pipeline_timesteps(5))
    assert.has_error(function() s:pipeline_timesteps(0) end)
    assert.has_error(function() with({ timestep_spacing = "karras" }):pipeline_timesteps(4) end)
  end)
  it("previous timesteps of the course's list", function()
    local pt = g.prev_timesteps:tolist()
    for i, t in ipairs(ts) do assert.are.equal(pt[i], s:previous_timestep(t)) end
  end)
  it("learned_range log variance (1e-6)", function()
    for i, t in ipairs(ts) do
      assert.is_true(rel(s:variance(t, g["variance.predicted_variance"]), g["variance.log_variance"][i]) <= 1e-6)
    end
  end)
  it("fdm.diffusion's learned_range variance over the same schedule (1e-5)", function()
    local sch = s:schedule()
    local pt = g.prev_timesteps:tolist()
    for i, t in ipairs(ts) do
      if pt[i] >= 0 then
        local lv = fdm.log(D.step_variance(sch, t, pt[i], "learned_range", g["variance.predicted_variance"]))
        assert.is_true(rel(lv, g["variance.log_variance"][i]) <= 1e-5)
      end
    end
  end)
  it("dynamic thresholding (ratio 0.95, max 1.5) (1e-6)", function()
    assert.is_true(rel(s:threshold(g["threshold.sample"]), g["threshold.result"]) <= 1e-6)
  end)
  it("step at every timestep: prev_sample and pred_original_sample (1e-6)", function()
    for i, t in ipairs(g["step.timestep"]:tolist()) do
      local x, x0 = s:step(g["step.model_output"], t, g["step.sample"], g["step.noise"])
      assert.is_true(rel(x, g["step.prev_sample"][i]) <= 1e-6, "prev_sample at t=" .. t)
      assert.is_true(rel(x0, g["step.pred_original_sample"][i]) <= 1e-6, "x0 at t=" .. t)
    end
  end)
  it("add_noise at stage II's noise level 250 (1e-6)", function()
    local r = s:add_noise(g["add_noise.original"], g["add_noise.noise"], g["add_noise.timestep"]:tolist()[1])
    assert.is_true(rel(r, g["add_noise.result"]) <= 1e-6)
  end)
end)

describe("deepfloyd tokenizer", function()
  local dir = ROOT .. "/tokenizer"
  local tok = Tok.load(dir)
  local g = L.read_json(dir .. "/golden.json")
  it("reads the unigram model (1000 pieces, <pad> appended as 1100)", function()
    assert.are.equal(1000, #tok.pieces)
    assert.are.equal(1100, tok.pad_id)
    assert.are.equal(2, tok.eos_id)
    assert.are.equal(0, tok.unk_id)
  end)
  it("refuses a cut spiece.model (wherever it is cut, between two pieces too) instead of a shorter vocabulary", function()
    local full = L.read_file(dir .. "/spiece.model")
    local cuts = {}
    for n = 1, #full - 1, 2003 do cuts[#cuts + 1] = n end
    assert.are.equal(0x0a, full:byte(1))            -- field 1 (a piece), length-delimited
    assert.is_true(full:byte(2) < 0x80)
    cuts[#cuts + 1] = 2 + full:byte(2)               -- exactly one whole piece
    for _, n in ipairs(cuts) do
      local ok, err = pcall(Tok.parse_model, full:sub(1, n))
      assert.is_false(ok, "cut at " .. n)
      assert.truthy(tostring(err):find("spiece.model is truncated or corrupt", 1, true), err)
    end
    local _, err = pcall(Tok.parse_model, full:sub(1, cuts[#cuts]))
    assert.truthy(err:find("(1 pieces, then no trainer spec)", 1, true), err)
    assert.are.equal(1000, #Tok.parse_model(full).pieces)
  end)
  for _, e in ipairs(g.entries) do
    it("ids, mask and length of " .. ("%q"):format(e.prompt):sub(1, 60), function()
      local ids, mask, toks, n = tok:encode(e.prompt, { max_length = 77 })
      assert.are.same(e.input_ids, ids)
      assert.are.same(e.attention_mask, mask)
      assert.are.equal(e.untruncated_length, n)
      assert.are.same(e.tokens, toks)
      assert.are.equal(e.pipeline_text, Tok.preprocess(e.prompt))
      local pids, pmask = tok:encode(e.pipeline_text, { max_length = 77 })
      assert.are.same(e.pipeline_input_ids, pids)
      assert.are.same(e.pipeline_attention_mask, pmask)
    end)
  end
end)

describe("deepfloyd model interface", function()
  local IF = require "fdm.deepfloyd"
  local cache = os.tmpname()
  local old = os.getenv("FDM_CACHE")
  local m1, m2
  setup(function()
    os.remove(cache)
    -- FDM_CACHE is read through os.getenv: point the cache at a temporary folder
    IF.cache_dir = function() return cache end
    m1 = IF.load(ROOT .. "/if-i")
    m2 = IF.load(ROOT .. "/if-ii", { text_model = m1 })
  end)
  teardown(function()
    os.execute("rm -rf " .. cache)
    m1, m2 = nil, nil
    collectgarbage(); collectgarbage()
  end)
  it("stage I: image shape, learned_range, thresholding max 1.5; stage II: max 1.0", function()
    assert.are.same({ 3, 16, 16 }, m1.image_shape)
    assert.are.equal("learned_range", m1.variance)
    assert.are.equal(1.5, m1.threshold.max)
    assert.are.equal(0.95, m1.threshold.ratio)
    assert.are.equal(2, m2.stage)
    assert.are.same({ 3, 32, 32 }, m2.image_shape)
    assert.are.equal(1.0, m2.threshold.max)
  end)
  it("encode: the T5 golden embedding of the pipeline text, cached on disk", function()
    local g = fdm.io.load_safetensors(ROOT .. "/text_encoder/golden.safetensors")
    local e = m1:encode("a lithograph of waterfalls")
    assert.are.same({ 1, 77, 64 }, e.shape)
    assert.is_true(rel(e[1], g.last_hidden_state_f64[1]) <= 5e-6)
    local m1b = IF.load(ROOT .. "/if-i")
    m1b.text_encoder = function() error("the disk cache was not used") end
    local e2 = m1b:encode("a lithograph of waterfalls")
    assert.are.equal(0, (e2 - e):abs():max():item())
  end)
  it("encode: the disk cache is keyed by the tokenizer too (the same T5 with another vocabulary)", function()
    m1:encode("a red boat")   -- cached with the tiny folders' tokenizer
    local dir = os.tmpname()
    os.remove(dir)
    os.execute(("mkdir -p '%s/a' && cp -r %s/if-i/unet '%s/a/' && cp -r %s/scheduler %s/text_encoder %s/tokenizer '%s/'")
      :format(dir, ROOT, dir, ROOT, ROOT, ROOT, dir))
    local ok, err = pcall(function()
      local same = IF.load(dir .. "/a")
      same.text_dir = m1.text_dir                      -- the very same T5 files: the cache serves
      same.text_encoder = function() error("the disk cache was not used") end
      same:encode("a red boat")
      local f = assert(io.open(dir .. "/tokenizer/tokenizer_config.json", "ab")); f:write(" "); f:close()
      local other = IF.load(dir .. "/a")
      other.text_dir = m1.text_dir
      local encoded = false
      local real = other.text_encoder
      other.text_encoder = function(...) encoded = true; return real(...) end
      other:encode("a red boat")
      assert.is_true(encoded, "a changed tokenizer must not reuse the cached embedding")
    end)
    os.execute("rm -rf " .. dir)
    assert(ok, err)
  end)
  it("encode_many: the uncached prompts in one T5 call, the same embeddings as one at a time, in order", function()
    local a = IF.load(ROOT .. "/if-i"); a.disk_cache = false
    local b = IF.load(ROOT .. "/if-i"); b.disk_cache = false
    local t5 = a:text_encoder()
    local calls, fwd = {}, t5.forward
    t5.forward = function(self, ids, ...) calls[#calls + 1] = ids.shape[1]; return fwd(self, ids, ...) end
    local ps = { "a photo of a cat", "", "an oil painting of an old man", "a photo of a cat" }
    local many = a:encode_many(ps)
    assert.are.same({ 3 }, calls)   -- one batch of the 3 distinct prompts
    for i, p in ipairs(ps) do assert.are.equal(0, (many[i] - b:encode(p)):abs():max():item(), p) end
    a:encode_many({ "", "a photo of a cat" })
    assert.are.same({ 3 }, calls)   -- all cached: no T5 call
    t5.forward = fwd
    local H = require "helpers"
    H.raises(function() return a:encode_many({ "ok", 42 }) end, "deepfloyd: a prompt must be a string")
  end)

  it("encode: embeddings from a file (@path.safetensors)", function()
    local p = os.tmpname() .. ".safetensors"
    fdm.io.save_safetensors(p, { prompt_embeds = fdm.ones(77, 64) })
    local e = m1:encode("@" .. p)
    assert.are.same({ 1, 77, 64 }, e.shape)
    os.remove(p)
  end)

  it("encode: an embeddings file of the wrong width, dtype or with NaN is refused by name", function()
    local H = require "helpers"
    for _, c in ipairs {
      { fdm.randn(1, 77, 32), "embeddings of width 32, the model takes 64" },
      { fdm.zeros(1, 77, 64):long(), "embeddings must be float32, float16 or bfloat16, got int64" },
      { fdm.full({ 77, 64 }, 0 / 0), "the embeddings hold NaN or infinite values" },
      { fdm.full({ 77, 64 }, math.huge), "the embeddings hold NaN or infinite values" },
    } do
      local p = os.tmpname() .. ".safetensors"
      fdm.io.save_safetensors(p, { prompt_embeds = c[1] })
      H.raises(function() return m1:encode("@" .. p) end, c[2])
      os.remove(p)
    end
  end)
  it("model(x_t, t, cond) returns eps and the raw variance; the sampler runs with CFG", function()
    fdm.manual_seed(3)
    local c, u = m1:encode("a rocket ship"), m1:encode("")
    local eps, var = m1(fdm.randn(2, 3, 16, 16), 500, c)
    assert.are.same({ 2, 3, 16, 16 }, eps.shape)
    assert.are.same({ 2, 3, 16, 16 }, var.shape)
    local x = D.sample(m1, 2, { cond = c, uncond = u, cfg = 7, steps = 4 })
    assert.are.same({ 2, 3, 16, 16 }, x.shape)
    local y = IF.upscale(m2, x, c, u, { steps = 3 })
    assert.are.same({ 2, 3, 32, 32 }, y.shape)
    assert.is_true(y:abs():max():item() < 10) -- finite, of image scale
  end)
  it("model(x_t, t, prompt) encodes the prompt; nil is the unconditional prompt", function()
    fdm.manual_seed(4)
    local x = fdm.randn(1, 3, 16, 16)
    local a = m1(x, 400, "a rocket ship")
    assert.are.equal(0, (a - m1(x, 400, m1:encode("a rocket ship"))):abs():max():item())
    assert.are.equal(0, (m1(x, 400) - m1(x, 400, m1:encode(""))):abs():max():item())
  end)

  it("a wrong image, timestep or condition is an error that says what was expected", function()
    local x, c = fdm.randn(1, 3, 16, 16), m1:encode("a rocket ship")
    local H = require "helpers"
    H.raises(function() return m1(fdm.randn(3, 16, 16), 500, c) end, "unet: the sample must be a tensor [N, 3, H, W], got [3, 16, 16]")
    H.raises(function() return m1(x:long(), 500, c) end, "unet: the sample must be float32, got int64")
    H.raises(function() return m1(fdm.randn(1, 4, 16, 16), 500, c) end, "unet: the sample has 4 channels, the model takes 3")
    H.raises(function() return m1(fdm.randn(1, 3, 12, 12), 500, c) end, "unet: the sample's size 12x12 is not a multiple of 8")
    H.raises(function() return m1(x, "500", c) end, "deepfloyd: the timestep must be a number or a tensor, got string")
    H.raises(function() return m1(x, 500, {}) end, "deepfloyd: cond must be prompt embeddings (model:encode(prompt)), a prompt or nil, got table")
    H.raises(function() return m1(x, 500, fdm.randn(77, 64)) end, "unet: prompt embeddings must be a tensor [N, L, 64] (model:encode(prompt)), got [77, 64]")
    H.raises(function() return m1(x, 500, fdm.randn(1, 77, 32)) end, "unet: prompt embeddings of width 32, the model takes 64")
    H.raises(function() return m1(fdm.randn(2, 3, 16, 16), 500, fdm.randn(3, 77, 64)) end, "unet: 3 prompt embeddings for 2 images")
    H.raises(function() return m1("x", 500, c) end, "deepfloyd: the image x_t must be a tensor, got string")
  end)

  it("--precision bf16 / fp16: the UNet on half operands, T5 on bf16 for either, cached apart", function()
    fdm.manual_seed(5)
    local x, c = fdm.randn(2, 3, 16, 16), m1:encode("a rocket ship")
    local e32 = m1(x, 500, c)
    m1:set_precision("bf16")
    local eb = m1(x, 500, c)
    m1:set_precision("fp16")
    local eh = m1(x, 500, c)
    m1:set_precision("fp32")
    assert.are.equal(0, (m1(x, 500, c) - e32):abs():max():item())   -- back to float32 exactly
    local rb, rh = rel(eb, e32), rel(eh, e32)
    assert.is_true(rb > 0 and rb < 0.05, "bf16 vs fp32: " .. rb)
    assert.is_true(rh > 0 and rh < rb, ("fp16 vs fp32 %g, bf16 %g"):format(rh, rb))
    -- T5: bf16 operands for either half precision, a disk cache entry of its own
    local t32 = m1:encode("a dog")
    m1:set_precision("fp16")
    local th = m1:encode("a dog")
    m1:set_precision("bf16")
    local tb = m1:encode("a dog")
    m1:set_precision("fp32")
    assert.are.equal(0, (th - tb):abs():max():item())
    local rt = rel(tb, t32)
    assert.is_true(rt > 0 and rt < 0.05, "T5 bf16 vs fp32: " .. rt)
    local fresh = IF.load(ROOT .. "/if-i")
    fresh.text_encoder = function() error("the disk cache was not used") end
    assert.are.equal(0, (fresh:encode("a dog") - t32):abs():max():item())
    local hf = IF.load(ROOT .. "/if-i", { precision = "fp16" })
    hf.text_encoder = function() error("the disk cache was not used") end
    assert.are.equal(0, (hf:encode("a dog") - tb):abs():max():item())
    local ok, err = pcall(m1.set_precision, m1, "fp8")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("--precision must be fp32, bf16 or fp16, got 'fp8'", 1, true), err)
  end)
  it("a stage II folder without a text encoder says so", function()
    local m = IF.load(ROOT .. "/if-ii")
    m.dir = "/nonexistent/if-ii"
    m.disk_cache = false
    local ok, e = pcall(m.encode, m, "a dog")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("text_encoder", 1, true))
  end)
end)

describe("scripts/sample.lua on the tiny folders", function()
  it("runs stage I then stage II and writes both grids", function()
    local out = os.tmpname()
    os.remove(out)
    local cmd = ("FDM_CACHE=%s/cache " .. FDM .. " scripts/sample.lua --model %s/if-i --upsampler %s/if-ii " ..
      "--prompts 'a lithograph of waterfalls,a man wearing a hat' --steps 3,5 --upsampler-steps 3 --seed 101 --out %s 2>&1")
      :format(out, ROOT, ROOT, out)
    local p = io.popen(cmd)
    local text = p:read("a")
    local ok = p:close()
    assert.is_true(ok, text)
    assert.truthy(text:find("peak memory", 1, true), text)
    assert.is_true(L.exists(out .. "/sample.png"))
    assert.is_true(L.exists(out .. "/sample_upsampled.png"))
    local im = fdm.io.read_png(out .. "/sample_upsampled.png")
    assert.is_true(im.shape[2] > 64)
    os.execute("rm -rf " .. out)
  end)
  it("--precision bf16 runs both stages and says so", function()
    local out = os.tmpname()
    os.remove(out)
    local cmd = ("FDM_CACHE=%s/cache " .. FDM .. " scripts/sample.lua --model %s/if-i --upsampler %s/if-ii " ..
      "--prompts 'a rocket ship' --steps 3 --upsampler-steps 2 --precision bf16 --out %s 2>&1"):format(out, ROOT, ROOT, out)
    local p = io.popen(cmd)
    local text = p:read("a")
    assert.is_true(p:close(), text)
    assert.truthy(text:find("stage I, 3 steps (3 model calls, pipeline timesteps), bf16:", 1, true), text)
    assert.truthy(text:find("stage II, 2 steps (2 model calls), bf16:", 1, true), text)
    assert.is_true(L.exists(out .. "/sample_upsampled.png"))
    os.execute("rm -rf " .. out)
    p = io.popen(FDM .. " scripts/sample.lua --precision fp8 2>&1; echo rc=$?")
    text = p:read("a")
    p:close()
    assert.truthy(text:find("rc=2", 1, true), text)
    assert.truthy(text:find("--precision expects one of fp32, bf16, fp16, got 'fp8'", 1, true), text)
  end)
  it("a stage II folder as --model, or a stage I folder as --upsampler, is a usage error that says which is which", function()
    local text, rc = H.sh(FDM .. " scripts/sample.lua --model " .. ROOT .. "/if-ii --steps 3")
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("if-ii' holds a stage II model, but a stage I model is expected here (--model takes stage I", 1, true), text)
    assert.is_nil(text:find("traceback", 1, true), text)
    text, rc = H.sh(FDM .. " scripts/partA/1_5_sampling.lua --model " .. ROOT .. "/if-i --upsampler " .. ROOT .. "/if-i")
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("--upsampler: deepfloyd: '" .. ROOT .. "/if-i' holds a stage I model, but a stage II model", 1, true), text)
  end)
  it("--timesteps: pipeline needs an IF model; course on IF makes steps - 1 calls", function()
    local text, rc = H.sh(FDM .. " scripts/sample.lua --timesteps pipeline --steps 3")
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("IFPipeline's timesteps need a DeepFloyd IF model (--model)", 1, true), text)
    local out = os.tmpname()
    os.remove(out)
    text, rc = H.sh(("FDM_CACHE=%s/cache %s scripts/sample.lua --model %s/if-i --timesteps course --steps 4 --out %s")
      :format(out, FDM, ROOT, out))
    os.execute("rm -rf " .. out)
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("stage I, 4 steps (3 model calls, course timesteps)", 1, true), text)
  end)
  it("step counts and the noise level beyond the models' timesteps are usage errors", function()
    for _, case in ipairs {
      { "--steps 1500", "--steps 1500: the model has 1000 timesteps" },
      { "--upsampler " .. ROOT .. "/if-ii --upsampler-steps 2000", "--upsampler-steps 2000: the upsampler has 1000 timesteps" },
      { "--upsampler " .. ROOT .. "/if-ii --noise-level 1000", "--noise-level 1000: expected 0 to 999" },
    } do
      local text, rc = H.sh(FDM .. " scripts/sample.lua --model " .. ROOT .. "/if-i " .. case[1])
      assert.are.equal(2, rc, text)
      assert.truthy(text:find(case[2], 1, true), text)
    end
  end)
  it("a missing folder is a usage error (exit 2)", function()
    local p = io.popen(FDM .. " scripts/sample.lua --model /nonexistent/IF-I-M 2>&1; echo rc=$?")
    local text = p:read("a")
    p:close()
    assert.truthy(text:find("rc=2", 1, true), text)
    assert.truthy(text:find("/nonexistent/IF-I-M", 1, true), text)
  end)
end)

describe("bench/deepfloyd.lua --write", function()
  it("writes a real-width T5 as the published fp16 shards, which the loader reads back", function()
    local T5 = require "fdm.deepfloyd.t5"
    local dir = os.tmpname()
    os.remove(dir)
    local text, rc = H.sh(FDM .. " bench/deepfloyd.lua --config t5-xxl --layers 1 --write " .. dir)
    local ok, err = pcall(function()
      assert.are.equal(0, rc, text)
      for _, f in ipairs { "text_encoder/config.json", "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.fp16-00002-of-00002.safetensors",
        "tokenizer/spiece.model", "scheduler/scheduler_config.json", "model_index.json" } do
        assert.is_true(L.exists(dir .. "/" .. f), f)
      end
      local enc = T5.load(dir .. "/text_encoder")
      assert.are.equal(2, #enc.files)
      assert.are.equal(324548608, enc.num_parameters)   -- shared 32128x4096, one layer (d_model 4096, d_ff 10240, 32x64 bias), final norm
      assert.are.equal("float16", enc.p["encoder.block.0.layer.1.DenseReluDense.wo.weight"].dtype)
      local h = fdm.no_grad(function() return enc(fdm.tensor({ { 71, 1 } }, { dtype = "int64" })) end)
      assert.are.same({ 1, 2, 4096 }, h.shape)
      assert.is_true(h:abs():max():item() < math.huge)
    end)
    os.execute("rm -rf " .. dir)
    assert(ok, err)
  end)
end)

-- a Hugging Face hub cache as diffusers leaves it: models--ORG--NAME/refs/main
-- holds a commit, snapshots/COMMIT/ the published layout as links to files
describe("model ids from the Hugging Face cache", function()
  local IF = require "fdm.deepfloyd"
  local home = os.tmpname()
  local abs = io.popen("pwd"):read("l") .. "/" .. ROOT
  local function link_tree(src, dst) -- every file of src as a link in dst, as the hub's snapshots hold them
    os.execute(("mkdir -p '%s' && for f in '%s'/*; do ln -s \"$f\" '%s'/; done"):format(dst, src, dst))
  end
  setup(function()
    os.remove(home)
    local hub = home .. "/hub"
    local s1 = hub .. "/models--DeepFloyd--IF-I-tiny/snapshots/0123abc"
    link_tree(abs .. "/if-i/unet", s1 .. "/unet")
    for _, d in ipairs { "scheduler", "text_encoder", "tokenizer" } do link_tree(abs .. "/" .. d, s1 .. "/" .. d) end
    os.execute(("echo '{\"_class_name\": \"IFPipeline\"}' > '%s/model_index.json'"):format(s1))
    os.execute(("mkdir -p '%s/models--DeepFloyd--IF-I-tiny/refs' && printf 0123abc > '%s/models--DeepFloyd--IF-I-tiny/refs/main'")
      :format(hub, hub))
    -- stage II without a refs/main: named by its commit
    local s2 = hub .. "/models--DeepFloyd--IF-II-tiny/snapshots/4567def"
    link_tree(abs .. "/if-ii/unet", s2 .. "/unet")
    link_tree(abs .. "/scheduler", s2 .. "/scheduler")
    link_tree(abs .. "/scheduler", s2 .. "/image_noising_scheduler")
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  it("tells model ids from paths and checkpoint files", function()
    assert.are.same({ org = "DeepFloyd", repo = "IF-I-M-v1.0", revision = "main", name = "DeepFloyd/IF-I-M-v1.0" },
      L.hub_id("DeepFloyd/IF-I-M-v1.0"))
    assert.are.equal("fp16", L.hub_id("DeepFloyd/IF-I-M-v1.0@fp16").revision)
    for _, not_id in ipairs { "runs/ddpm.safetensors", "/abs/IF-I-M", "a/b/c", "IF-I-M", ROOT .. "/if-i", "./x/y" } do
      assert.is_nil(L.hub_id(not_id), not_id)
    end
  end)

  it("finds the snapshot by refs/main or by commit, and says where it looked otherwise", function()
    local saved = L.hub_cache
    L.hub_cache = function() return home .. "/hub" end
    local ok, e = pcall(function()
      assert.are.equal(home .. "/hub/models--DeepFloyd--IF-I-tiny/snapshots/0123abc", IF.resolve("DeepFloyd/IF-I-tiny"))
      assert.are.equal(home .. "/hub/models--DeepFloyd--IF-II-tiny/snapshots/4567def", IF.resolve("DeepFloyd/IF-II-tiny@4567def"))
      local ok2, e2 = pcall(IF.resolve, "DeepFloyd/IF-II-tiny")
      assert.is_false(ok2)
      assert.truthy(tostring(e2):find("no revision 'main' under " .. home .. "/hub/models--DeepFloyd--IF-II-tiny", 1, true), e2)
      assert.truthy(tostring(e2):find("huggingface-cli download DeepFloyd/IF-II-tiny", 1, true), e2)
      assert.is_true(IF.is_folder("DeepFloyd/IF-I-M-v1.0")) -- an id goes to IF.load, which says what is missing
      -- a ref whose snapshot is gone
      os.execute(("mkdir -p '%s/hub/models--DeepFloyd--IF-II-tiny/refs' && printf 89ab > '%s/hub/models--DeepFloyd--IF-II-tiny/refs/v1'")
        :format(home, home))
      local ok3, e3 = pcall(IF.resolve, "DeepFloyd/IF-II-tiny@v1")
      assert.is_false(ok3)
      assert.truthy(tostring(e3):find("refs/v1 names commit 89ab, but " .. home .. "/hub/models--DeepFloyd--IF-II-tiny/snapshots/89ab is missing", 1, true), e3)
    end)
    L.hub_cache = saved
    assert(ok, e)
  end)

  it("the unet/ sub-folder names the folder above it", function()
    assert.are.equal(ROOT .. "/if-i", IF.resolve(ROOT .. "/if-i/unet"))
    assert.are.equal(ROOT .. "/if-i", IF.resolve(ROOT .. "/if-i/unet/"))
    assert.are.equal(ROOT .. "/if-i", IF.resolve(ROOT .. "/if-i"))
  end)

  it("sample.lua runs stage I and II from ids (HF_HOME), and an id not downloaded is a usage error", function()
    local out = home .. "/out"
    local cmd = ("HF_HOME=%s FDM_CACHE=%s/cache %s scripts/sample.lua --model DeepFloyd/IF-I-tiny " ..
      "--upsampler DeepFloyd/IF-II-tiny@4567def --prompts 'a red boat' --steps 3 --upsampler-steps 2 --out %s")
      :format(home, home, FDM, out)
    local text, rc = H.sh(cmd)
    assert.are.equal(0, rc, text)
    assert.is_true(L.exists(out .. "/sample_upsampled.png"), text)
    text, rc = H.sh(("HF_HOME=%s %s scripts/partA/1_5_sampling.lua --model DeepFloyd/IF-I-XL-v1.0"):format(home, FDM))
    assert.are.equal(2, rc, text)
    assert.truthy(text:find("neither a folder nor in the Hugging Face cache", 1, true), text)
  end)
end)

describe("Part A grids through stage II (C.save_upsampled)", function()
  it("diffuses the samples only, resizes the inputs, and derives an anagram's view from its sample's result", function()
    local IF = require "fdm.deepfloyd"
    local C = dofile("scripts/partA/common.lua")
    local m1 = IF.load(ROOT .. "/if-i")
    local m2 = IF.load(ROOT .. "/if-ii", { text_model = m1 })
    m1.progress, m2.progress = false, false
    C.IF, C.upsampler, C.upsampler_steps = m1, m2, 2
    local cond = m1:encode("a red boat")
    fdm.manual_seed(5)
    local sample, input = fdm.randn(1, 3, 16, 16):clamp(-1, 1), fdm.rand(1, 3, 16, 16) * 2 - 1
    local flip = function(y) return y:flip(3) end
    local upscaled, saved = 0, nil
    local real_upscale, real_save = IF.upscale, fdm.io.save_grid
    IF.upscale = function(m, x, ...) upscaled = upscaled + x.shape[1]; return real_upscale(m, x, ...) end
    fdm.io.save_grid = function(_, t) saved = t end
    local real_print, printed = print, {}
    _G.print = function(s) printed[#printed + 1] = s end
    local ok, err = pcall(function()
      C.save_upsampled("/nonexistent/grid.png", { sample, sample:flip(3), input },
        { upsample = { cond, { of = 1, apply = flip }, false } })
      assert.are.equal(1, upscaled)                        -- one image through stage II
      local S2 = m2.image_shape[2]
      assert.are.same({ 3, 3, S2, S2 }, saved.shape)
      local a, b = saved:narrow(1, 1, 1), saved:narrow(1, 2, 1)
      assert.are.equal(0, (b - a:flip(3)):abs():max():item())   -- the view of the same result
      local want = C.to01({ fdm.F.interpolate(input, { size = { S2, S2 }, mode = "bilinear", align_corners = false }) })
      assert.is_true((saved:narrow(1, 3, 1) - want):abs():max():item() < 1e-6)   -- the input, resized
      -- a grid without samples writes nothing
      saved, upscaled = nil, 0
      C.save_upsampled("/nonexistent/grid.png", { input }, { upsample = {} })
      assert.is_nil(saved)
      assert.are.equal(0, upscaled)
      assert.truthy(printed[#printed]:find("not written (this grid holds no samples", 1, true), printed[#printed])
    end)
    IF.upscale, fdm.io.save_grid, _G.print = real_upscale, real_save, real_print
    assert(ok, err)
  end)
end)

describe("Part A scripts on the tiny IF folders", function()
  local out = os.tmpname()
  setup(function() os.remove(out) end)
  teardown(function() os.execute("rm -rf " .. out) end)
  local function run(script, extra)
    local cmd = ("FDM_CACHE=%s/cache %s scripts/partA/%s.lua --model %s/if-i --upsampler %s/if-ii --out %s %s 2>&1")
      :format(out, FDM, script, ROOT, ROOT, out, extra or "")
    local p = io.popen(cmd)
    local text = p:read("a")
    local ok = p:close()
    assert.is_true(ok, cmd .. "\n" .. text)
    return text
  end
  it("1_8 anagrams with text prompts writes the grid and its 256 version", function()
    run("1_8_anagrams", "--steps 3 --prompts 'an oil painting of an old man,an oil painting of people around a campfire'")
    assert.is_true(L.exists(out .. "/1_8_anagrams.png"))
    assert.is_true(L.exists(out .. "/1_8_anagrams_256.png"))
  end)
  it("1_7_2 inpainting with a user RGB image and mask at the model's size", function()
    local img, mask = out .. "_img.png", out .. "_mask.png"
    fdm.io.write_png(img, fdm.rand(3, 40, 50))
    local m = fdm.zeros(1, 40, 50)
    m:narrow(2, 10, 20):narrow(3, 10, 20):fill_(1)
    fdm.io.write_png(mask, m)
    run("1_7_2_inpainting", ("--steps 3 --n 1 --prompt 'a photo of a dog' --image %s --mask %s"):format(img, mask))
    assert.is_true(L.exists(out .. "/1_7_2_inpainting.png"))
    os.remove(img); os.remove(mask)
  end)
  it("1_7_sdedit with a user JPEG (read by its magic bytes, resized and centre-cropped)", function()
    local img = out .. "_user.jpg"
    local f = assert(io.open("tests/data/jpeg/rgb.jpg", "rb"))
    local bytes = f:read("a")
    f:close()
    f = assert(io.open(img, "wb"))
    f:write(bytes)
    f:close()
    run("1_7_sdedit", ("--steps 3 --prompt 'a rocket ship' --i-starts 1 --image %s"):format(img))
    assert.is_true(L.exists(out .. "/1_7_sdedit_256.png"))
    os.remove(img)
  end)
  it("--help of the image scripts says PNG or JPEG", function()
    local p = io.popen(FDM .. " scripts/partA/1_7_sdedit.lua --help 2>&1")
    local text = p:read("a")
    p:close()
    assert.truthy(text:find("PNG or JPEG", 1, true), text)
  end)
  it("1_7_sdedit and 1_7_1 sketches run", function()
    run("1_7_sdedit", "--steps 3 --prompt 'a rocket ship' --i-starts 1,10")
    run("1_7_1_sketches", "--steps 3")
    assert.is_true(L.exists(out .. "/1_7_sdedit_256.png"))
    assert.is_true(L.exists(out .. "/1_7_1_sketches.png"))
  end)
end)
