-- DeepFloyd IF on a device: model:to(dev) moves stage I, stage II and T5
-- (float16 weights included) and the pipeline keeps its tensors there. The
-- test-only "fake" device (tests/c/fake_backend.c, loaded by tests/helpers.lua
-- when FDM_FAKE_BACKEND is set, as `make test` does) runs the CPU kernels over
-- separate memory, so every number must equal the CPU's bit for bit.
local fdm = require "fdm"
local H = require "helpers"
local IF = require "fdm.deepfloyd"
local D = require "fdm.diffusion"

local ROOT = "tests/data/deepfloyd-tiny"
local FDM = os.getenv("FDM_BIN") or "./build/fdm"
local have_fake = fdm.supports("fake", "copy")

-- the largest |a - b| (a on any device, b on the CPU)
local function diff(a, b)
  assert.are.same(b.shape, a.shape)
  return (a:to("cpu"):float() - b:float()):abs():max():item()
end

local function load_pair(dir, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local cpu = IF.load(dir, o)
  o.device = "fake"
  if o.text_model then o.text_model = o.text_model_fake end
  local fake = IF.load(dir, o)
  cpu.disk_cache, fake.disk_cache = false, false -- each computes its own embeddings
  return cpu, fake
end

describe("DeepFloyd IF on the fake device", function()
  if not have_fake then
    pending("FDM_FAKE_BACKEND is not set (make test sets it)")
    return
  end
  local m1, f1 = load_pair(ROOT .. "/if-i")
  local m2 = IF.load(ROOT .. "/if-ii", { text_model = m1 })
  local f2 = IF.load(ROOT .. "/if-ii", { text_model = f1, device = "fake" })
  m2.disk_cache, f2.disk_cache = false, false
  teardown(function() m1, f1, m2, f2 = nil, nil, nil, nil; collectgarbage(); collectgarbage() end)

  it("every UNet weight moved, float16 ones stay float16", function()
    assert.are.equal("fake", f1.device)
    local n16 = 0
    for name, t in pairs(f1.net.p) do
      assert.are.equal("fake", t.device, name)
      assert.are.equal(m1.net.p[name].dtype, t.dtype, name)
      if t.dtype == "float16" then n16 = n16 + 1 end
    end
    for name, t in pairs(f2.net.p) do assert.are.equal("fake", t.device, name) end
  end)

  it("T5 embeddings equal the CPU's and stay on the device", function()
    local ec, ef = m1:encode("a rocket ship"), f1:encode("a rocket ship")
    assert.are.equal("fake", ef.device)
    assert.are.equal("fake", f1.t5.p["shared.weight"].device)
    assert.are.equal(0, diff(ef, ec))
    assert.are.equal(0, diff(f1:encode(""), m1:encode("")))
    -- stage II takes stage I's embeddings, on its own device
    assert.are.equal("fake", f2:encode("a rocket ship").device)
  end)

  it("stage I UNet and a scheduler step equal the CPU's", function()
    fdm.manual_seed(7)
    local x = fdm.randn(2, 3, 64, 64)
    local noise = fdm.randn(2, 3, 64, 64)
    local c = m1:encode("a rocket ship")
    local eps_c, var_c = m1(x, 500, c)
    local xf = x:to("fake")
    local eps_f, var_f = f1(xf, 500, f1:encode("a rocket ship"))
    assert.are.equal("fake", eps_f.device)
    assert.is_true(diff(eps_f, eps_c) <= 1e-6)
    assert.is_true(diff(var_f, var_c) <= 1e-6)
    -- a CPU image in: CPU results out (Part A scripts' own images)
    assert.are.equal("cpu", (f1(x, 500, c)).device)
    local out_c = fdm.cat({ eps_c, var_c }, 2)
    local out_f = fdm.cat({ eps_f, var_f }, 2)
    local pc, x0c = m1.scheduler:step(out_c, 500, x, noise, { t_prev = 450 })
    local pf, x0f = f1.scheduler:step(out_f, 500, xf, noise:to("fake"), { t_prev = 450 })
    assert.are.equal("fake", pf.device)
    assert.is_true(diff(pf, pc) <= 1e-6)
    assert.is_true(diff(x0f, x0c) <= 1e-6)
  end)

  it("sampling (stage I, CFG, learned variance, thresholding) then stage II equal the CPU's", function()
    local function run(a, b)
      fdm.manual_seed(101)
      local c, u = a:encode("a man wearing a hat"), a:encode("")
      local x = D.sample(a, 1, { cond = c, uncond = u, cfg = 7, steps = 3 })
      local y = IF.upscale(b, x, c, u, { steps = 3, cfg = 4 })
      return x, y
    end
    local xc, yc = run(m1, m2)
    local xf, yf = run(f1, f2)
    assert.are.equal("fake", xf.device)
    assert.are.equal("fake", yf.device)
    assert.is_true(diff(xf, xc) <= 1e-6, "stage I " .. diff(xf, xc))
    assert.is_true(diff(yf, yc) <= 1e-6, "stage II " .. diff(yf, yc))
  end)

  it("graph mode (emulated capture): both stages, strided and pipeline timesteps, fp32 and bf16, equal eager bit for bit", function()
    local function run(a, b, graph, ts)
      fdm.manual_seed(7)
      local c, u = a:encode("a man wearing a hat"), a:encode("")
      local x = D.sample(a, 2, { cond = c, uncond = u, cfg = 7, steps = 5, timesteps = ts, graph = graph })
      local y = IF.upscale(b, x, c, u, { steps = 3, cfg = 4, graph = graph })
      return x, y
    end
    for _, prec in ipairs { "fp32", "bf16" } do
      f1:set_precision(prec); f2:set_precision(prec)
      for _, ts in ipairs { false, f1.scheduler:pipeline_timesteps(4) } do
        local xe, ye = run(f1, f2, nil, ts or nil)
        local xg, yg = run(f1, f2, { emulate = true }, ts or nil)
        assert.are.equal(0, diff(xg, xe:to("cpu")), prec)
        assert.are.equal(0, diff(yg, ye:to("cpu")), prec)
      end
    end
    f1:set_precision("fp32"); f2:set_precision("fp32")
  end)

  it("a timestep tensor on the device: the table's row equals the host sinusoid; outside 0..T-1 it is an error", function()
    local x, c = fdm.randn(1, 3, 16, 16), m1:encode("a man wearing a hat")
    local a = m1(x, 421, c)
    local b = f1(x:to("fake"), fdm.tensor({ 421 }, { dtype = "int64" }):to("fake"), c:to("fake"))
    assert.are.equal(0, diff(b, a))
    H.raises(function() return f1(x:to("fake"), fdm.tensor({ 1000 }, { dtype = "int64" }):to("fake"), c:to("fake")) end,
      "unet: timestep 1000 outside the model's 0..999")
  end)

  it("a large model's per-block collection empties the CPU's cache only, never a device's", function()
    -- a device's cache is what its next block reuses (emptying it cost 0.1 s per IF step on an H200)
    local calls, real = {}, fdm.empty_cache
    fdm.empty_cache = function(dev) calls[#calls + 1] = tostring(dev); return real(dev) end
    local ok, err = pcall(function()
      local x = fdm.randn(1, 3, 16, 16)
      for _, m in ipairs { m1, f1 } do
        m.net.collect, m.t5.collect = true, true
        calls = {}
        m(m == f1 and x:to("fake") or x, 300, m:encode("a red barn"))
        m.net.collect, m.t5.collect = false, false
        if m == m1 then
          assert.is_true(#calls >= 8, "the CPU model emptied the CPU's cache after each block")
          for _, d in ipairs(calls) do assert.are.equal("cpu", d) end
        else
          assert.are.same({}, calls)
        end
      end
    end)
    fdm.empty_cache = real
    assert(ok, err)
  end)

  it("model:to moves a loaded model back and forth; an unknown device is an error", function()
    local m = IF.load(ROOT .. "/if-i")
    m.disk_cache = false
    local e = m:encode("a rocket ship")
    m:to("fake")
    assert.are.equal("fake", m:encode("a rocket ship").device)
    assert.are.equal("fake", m.t5.p["shared.weight"].device)
    m:to("cpu")
    assert.are.equal(0, diff(m:encode("a rocket ship"), e))
    assert.has_error(function() m:to("nodevice") end)
  end)
end)

-- the tiny stage I folder with float16 weights (every matrix and conv
-- kernel half, as the published fp16 variants), memory-mapped when loaded
local function fp16_folder()
  return dofile("tests/cuda/if_half_folder.lua")(ROOT, H.tmpdir(), { "if-i" })
end

describe("DeepFloyd IF with memory-mapped float16 weights on the fake device", function()
  if not have_fake then
    pending("FDM_FAKE_BACKEND is not set (make test sets it)")
    return
  end
  local d = fp16_folder()
  teardown(function() os.execute("rm -rf '" .. d .. "'"); collectgarbage(); collectgarbage() end)
  it("half UNet and T5 weights move as half and give the CPU's numbers", function()
    local m, f = load_pair(d .. "/if-i", { variant = "fp16" })
    local n16 = 0
    for name, t in pairs(f.net.p) do
      assert.are.equal("fake", t.device, name)
      assert.are.equal(m.net.p[name].dtype, t.dtype, name)
      if t.dtype == "float16" then n16 = n16 + 1 end
    end
    assert.is_true(n16 > 10, "float16 matrices: " .. n16)
    local ec, ef = m:encode("a rocket ship"), f:encode("a rocket ship")
    assert.are.equal("float16", f.t5.p["shared.weight"].dtype)
    assert.are.equal("fake", f.t5.p["shared.weight"].device)
    assert.are.equal(0, diff(ef, ec))
    fdm.manual_seed(5)
    local x = fdm.randn(1, 3, 64, 64)
    local eps_c, var_c = m(x, 700, ec)
    local eps_f, var_f = f(x:to("fake"), 700, ef)
    assert.are.equal("fake", eps_f.device)
    assert.is_true(diff(eps_f, eps_c) <= 1e-6)
    assert.is_true(diff(var_f, var_c) <= 1e-6)
  end)
end)

-- a script run as `fdm -e 'fdm.load_backend(FAKE)' script ... --device DEV`
-- (the fake device is a plugin: the script's --device accepts it once loaded)
local function run_on(dev, script, args)
  local out = H.tmpdir()
  local fake = os.getenv("FDM_FAKE_BACKEND")
  local cmd = ("FDM_CACHE='%s/cache' %s -e \"fdm.load_backend('%s')\" %s %s --device %s --out '%s'")
    :format(out, FDM, fake, script, args, dev, out)
  local text, rc = H.sh(cmd)
  assert.are.equal(0, rc, cmd .. "\n" .. text)
  return out
end

describe("scripts on the fake device write the CPU's images byte for byte", function()
  if not have_fake then
    pending("FDM_FAKE_BACKEND is not set (make test sets it)")
    return
  end
  local function same(a, b, files)
    for _, f in ipairs(files) do
      local x, y = H.readall(a .. "/" .. f), H.readall(b .. "/" .. f)
      assert.is_true(x == y, f .. " differs between cpu and fake")
    end
    os.execute("rm -rf '" .. a .. "' '" .. b .. "'")
  end
  it("sample.lua, stage I and II", function()
    local args = ("--model %s/if-i --upsampler %s/if-ii --prompts 'a rocket ship' --steps 3 --upsampler-steps 3")
      :format(ROOT, ROOT)
    same(run_on("cpu", "scripts/sample.lua", args), run_on("fake", "scripts/sample.lua", args),
      { "sample.png", "sample_upsampled.png" })
  end)
  it("Part A inpainting of a user JPEG (CPU image and mask, samples on the device)", function()
    local d = H.tmpdir()
    local m = fdm.zeros(1, 14, 20)
    m:narrow(2, 4, 6):narrow(3, 5, 8):fill_(1)
    fdm.io.write_png(d .. "/mask.png", m)
    local args = ("--model %s/if-i --upsampler %s/if-ii --steps 3 --n 1 --prompt 'a photo of a dog' --image %s --mask %s")
      :format(ROOT, ROOT, H.here("data/jpeg/rgb.jpg"), d .. "/mask.png")
    same(run_on("cpu", "scripts/partA/1_7_2_inpainting.lua", args), run_on("fake", "scripts/partA/1_7_2_inpainting.lua", args),
      { "1_7_2_inpainting.png", "1_7_2_inpainting_256.png" })
    os.execute("rm -rf '" .. d .. "'")
  end)
end)

describe("scripts/sample.lua --device", function()
  it("is an option of --help", function()
    local out = H.sh(FDM .. " scripts/sample.lua --help")
    assert.truthy(out:find("--device", 1, true), out)
  end)
  it("--device cuda without a CUDA device is one clear line, exit 2", function()
    if fdm.supports and fdm.supports("cuda", "copy") then
      pending("this machine has a CUDA device")
      return
    end
    local out, rc = H.sh(FDM .. " scripts/sample.lua --model " .. ROOT .. "/if-i --device cuda --steps 3")
    assert.are.equal(2, rc, out)
    assert.truthy(out:find("--device cuda", 1, true), out)
    assert.is_nil(out:find("traceback", 1, true), out)
    local lines = select(2, out:gsub("\n", "\n"))
    assert.is_true(lines <= 1, out)
  end)
end)

describe("DeepFloyd IF on a device too small for it", function()
  it("is refused before anything moves, saying what it needs and what the device has; a model that fits moves", function()
    if not have_fake then pending("no fake device") return end
    local code = "fdm.load_backend(os.getenv('FDM_FAKE_BACKEND')) " ..
      "local ok, e = pcall(fdm.deepfloyd.load, 'tests/data/deepfloyd-tiny/if-i', { device = 'fake' }) print(ok, e) " ..
      "local m = fdm.deepfloyd.load('tests/data/deepfloyd-tiny/if-i') print(pcall(m.to, m, 'fake')) print(m.device, m.net.device) " ..
      "print(fdm.backend_stats('fake').live_bytes)"
    local out, rc = H.sh("FDM_FAKE_MEMORY=2000000 " .. FDM .. " -e \"" .. code .. "\"")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("deepfloyd: 'tests/data/deepfloyd-tiny/if-i' (UNet) needs 6.9 MB on fake, which has 2.0 MB available of 2.0 MB", 1, true), out)
    local live = tonumber(out:match("\ncpu\tnil\n(%d+)\n"))   -- nothing moved (the device probe's 4 bytes at most)
    assert.truthy(live and live <= 4, out)
    out, rc = H.sh("FDM_FAKE_MEMORY=100000000 " .. FDM .. " -e \"" .. code .. "\"")
    assert.are.equal(0, rc, out)
    assert.truthy(out:match("^true"), out)
  end)
end)

describe("bench/deepfloyd.lua on a device", function()
  it("moves the random-weight model to --device, runs it under --precision and reports the device's memory", function()
    if not have_fake then pending("no fake device") return end
    local out, rc = H.sh(FDM .. " -e \"fdm.load_backend(os.getenv('FDM_FAKE_BACKEND'))\" bench/deepfloyd.lua " ..
      "--config t5-xxl --layers 1 --steps 1 --device fake --precision fp16")
    assert.are.equal(0, rc, out)
    -- fp16 asked: T5 runs on bf16 operands (its activations outgrow float16)
    assert.truthy(out:match("t5%-xxl: seconds per prompt embedding [%d.]+ s %(one timed run%) %(scaled from 1 layers%) on fake, bf16"), out)
    assert.truthy(out:match("fake memory [%d.]+ GB %(live"), out)
    local bad, rc2 = H.sh(FDM .. " bench/deepfloyd.lua --precision fp8")
    assert.are.equal(2, rc2, bad)
  end)

  it("--graph is for the UNets on a device, without --profile (usage errors, exit 2)", function()
    if not have_fake then pending("no fake device") return end
    for _, c in ipairs {
      { "--graph", "--graph: CUDA graphs need --device cuda (the CPU has none)" },
      { "--graph --config t5-xxl --device fake", "--graph: the UNet configurations only" },
      { "--graph --profile --device fake", "--graph and --profile: a replay has no per-kernel times" },
    } do
      local out, rc = H.sh(FDM .. " -e \"fdm.load_backend(os.getenv('FDM_FAKE_BACKEND'))\" bench/deepfloyd.lua " .. c[1])
      assert.are.equal(2, rc, out)
      assert.truthy(out:find(c[2], 1, true), out)
    end
  end)
end)
