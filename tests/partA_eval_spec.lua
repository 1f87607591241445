-- scripts/partA/eval_quality.lua on a tiny randomly initialised DDPM (D=8):
-- the report holds the three sections with shares in [0,1], the example grid
-- is written, and bad options are clear errors.
local fdm = require "fdm"
local M = require "fdm.ddpm_model"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local H = require "helpers"
local sh, exists = H.sh, H.exists
local function in01(v) return type(v) == "number" and v >= 0 and v <= 1 end

describe("Part A quality (eval_quality.lua, tiny random model)", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p '" .. dir .. "'")
  local weights = dir .. "/tiny.safetensors"
  fdm.manual_seed(3)
  M.save(M.new { hidden = 8 }, weights)
  local base = "OMP_NUM_THREADS=1 " .. BIN .. " scripts/partA/eval_quality.lua --model " .. weights ..
    " --n 2 --steps 3 --seed 5 --ref 100 --out " .. dir

  it("writes a report with the cfg, anagram and hybrid sections and an example grid", function()
    local out, rc = sh(base .. " --pairs 6:9,2:5:flip --hybrid-pairs 0:1,1:8")
    assert.are.equal(0, rc, out)
    for _, s in ipairs({ "[cfg]", "[anagrams]", "[hybrids]", "images/s", "seed 5" }) do
      assert.truthy(out:find(s, 1, true), s .. "\n" .. out)
    end
    local report = dir .. "/quality.txt"
    assert.is_true(exists(report), out)
    assert.is_true(exists(dir .. "/quality_examples.png"), out)
    local text = assert(io.open(report)):read("a")
    for _, s in ipairs({ "-- command: ", "eval_quality.lua", weights, "[cfg]", "[anagrams]", "[hybrids]" }) do
      assert.truthy(text:find(s, 1, true), s)
    end
    local r = dofile(report)
    assert.are.equal(5, r.seed)
    assert.are.equal(2, r.n)
    assert.are.equal(3, r.steps)
    assert.are.equal(weights, r.model)
    assert.is_true(in01(r.cfg.overall))
    assert.are.equal(20, r.cfg.n)
    for d = 0, 9 do
      assert.is_true(in01(r.cfg.per_digit[d].share), "digit " .. d)
      assert.are.equal(5 + d, r.cfg.per_digit[d].seed)
    end
    assert.are.equal(2, #r.anagrams)
    assert.are.equal("6:9:rot180", r.anagrams[1].pair)   -- --view defaults to rot180
    assert.are.equal("2:5:flip", r.anagrams[2].pair)
    for _, a in ipairs(r.anagrams) do
      assert.is_true(in01(a.p1) and in01(a.p2) and in01(a.both), a.pair)
      assert.is_true(a.both <= math.min(a.p1, a.p2))
    end
    assert.are.equal(2, #r.hybrids)
    for _, h in ipairs(r.hybrids) do
      assert.is_true(in01(h.low) and in01(h.high) and in01(h.both), h.pair)
      assert.is_true(h.both <= math.min(h.low, h.high))
    end
    -- the calibrated low-pass for 28x28 digits is the default
    assert.are.same({ kind = "dct", keep = 6 }, r.hybrid_options.filter)
    assert.are.equal("own", r.hybrid_options.isolate)   -- and the band isolation calibrated with it
    assert.are.equal(7, r.hybrid_options.cfg_low)
    assert.are.equal(7, r.hybrid_options.cfg_high)
    for _, h in ipairs(r.hybrids) do
      assert.is_true(h.blank_low >= 0 and h.blank_low <= 2 and h.blank_high >= 0 and h.blank_high <= 2, h.pair)
    end
    if r.reference then   -- the MNIST test set was found: calibration of the readouts
      assert.is_true(in01(r.reference.image) and in01(r.reference.low) and in01(r.reference.high))
      -- hybrids of real digits: the readouts' ceiling per pair
      assert.is_true(in01(r.reference.hybrids["0:1"]) and in01(r.reference.hybrids["1:8"]))
      assert.is_true(r.reference.hybrids["0:1"] > 0.5, r.reference.hybrids["0:1"])   -- 0.87 measured
      -- the blank guard: half the faintest 1 % of real digits (0.46 and 26 measured on 1000 digits)
      local g = r.blank_guard
      assert.is_true(g.low_contrast > 0.2 and g.low_contrast < 1, g.low_contrast)
      assert.is_true(g.high_ink > 10 and g.high_ink < 50, g.high_ink)
    end
    assert.is_true(r.timing.images > 0 and r.timing.images_per_s > 0)
  end)

  it("runs one section alone and rejects bad pairs", function()
    local out, rc = sh(base .. " --sections cfg --ref 0 --report " .. dir .. "/only_cfg.txt")
    assert.are.equal(0, rc, out)
    local r = dofile(dir .. "/only_cfg.txt")
    assert.is_true(in01(r.cfg.overall))
    assert.is_nil(r.anagrams)
    assert.is_nil(r.hybrids)
    local out2, rc2 = sh(base .. " --pairs 6:x")
    assert.are.equal(2, rc2, out2)
    assert.truthy(out2:find("not a digit", 1, true), out2)
    local out3, rc3 = sh(base .. " --pairs 6:9:spin")
    assert.are.equal(2, rc3, out3)
    assert.truthy(out3:find("unknown view", 1, true), out3)
  end)

  it("passes the hybrid options to the estimator and records them", function()
    local out, rc = sh(base .. " --sections hybrids --ref 0 --hybrid-pairs 8:7 --sigma 1.5 --kernel 13" ..
      " --hybrid-cfg-high 3 --hybrid-low-above 900 --hybrid-isolate both --report " .. dir .. "/hyb.txt")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("CFG 7 (far 7, near 3), far prompt alone for t >= 900, isolated bands: both", 1, true), out)
    local r = dofile(dir .. "/hyb.txt")
    assert.are.same({ filter = { kind = "gaussian", kernel = 13, sigma = 1.5 }, cfg_low = 7, cfg_high = 3, low_above = 900,
      isolate = "both" }, r.hybrid_options)
    assert.are.equal(1, #r.hybrids)
    local out2, rc2 = sh(base .. " --sections hybrids --hybrid-isolate near")
    assert.are.equal(2, rc2, out2)
    assert.truthy(out2:find("near", 1, true), out2)
    local out3, rc3 = sh(base .. " --sections hybrids --ref 0 --hybrid-pairs 8:7 --keep 4 --report " .. dir .. "/hyb4.txt")
    assert.are.equal(0, rc3, out3)
    assert.truthy(out3:find("low-pass = DCT low-pass, 4 lowest frequencies per axis", 1, true), out3)
    assert.are.same({ kind = "dct", keep = 4 }, dofile(dir .. "/hyb4.txt").hybrid_options.filter)
    for _, bad in ipairs({ { " --keep 4 --sigma 2", "exclude each other" }, { " --filter dct --kernel 9", "--filter dct takes --keep" },
        { " --filter gaussian --keep 3", "--filter gaussian takes --kernel and --sigma" }, { " --keep 29", "more frequencies than a 28x28 image has" },
        { " --kernel 57", "--kernel 57 is too large for 28x28 images (reflect padding: at most 55)" } }) do
      local o, c = sh(base .. " --sections hybrids" .. bad[1])
      assert.are.equal(2, c, o)
      assert.truthy(o:find(bad[2], 1, true), o)
    end
  end)

  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
end)

describe("the shipped DDPM's hybrids (1_9_hybrids' pairs, the calibrated defaults)", function()
  it("read both ways: the far digit from afar, the near digit close up, in at least half the samples", function()
    local dir = os.tmpname()
    os.remove(dir)
    local out, rc = sh("OMP_NUM_THREADS=2 " .. BIN .. " scripts/partA/eval_quality.lua --sections hybrids --hybrid-pairs 0:1,8:7" ..
      " --n 12 --ref 0 --out " .. dir)
    assert.are.equal(0, rc, out)
    local r = dofile(dir .. "/quality.txt")
    os.execute("rm -rf '" .. dir .. "'")
    assert.are.equal("own", r.hybrid_options.isolate)
    for _, h in ipairs(r.hybrids) do   -- measured with --n 50: 1.00 and 0.94
      assert.is_true(h.both >= 0.5, ("%s: both %.2f (low %.2f, high %.2f)"):format(h.pair, h.both, h.low, h.high))
    end
  end)
end)

describe("the main demo's anagram (scripts/anagram.lua defaults)", function()
  it("is an illusion real digits do not make: under 20 % of real p1 digits read as p2 in the view", function()
    local C = dofile("scripts/partA/common.lua")
    local cls = require "fdm.classifier"
    local d = C.ANAGRAM_DEFAULT
    local p = C.split(d.prompts)
    local p1, p2 = M.parse_prompt(p[1]), M.parse_prompt(p[2])
    assert.is_true(p1 >= 0 and p2 >= 0 and p1 ~= p2, d.prompts)
    local ds = C.mnist_test()
    local x = ds.images:narrow(1, 1, 3000)
    local labels = ds.labels:narrow(1, 1, 3000):tolist()
    local view = C.D.view_by_name(d.view)
    local pred = cls.predict(cls.load(), M.from_model(view.apply(M.to_model(x)))):tolist()
    local n, k = 0, 0
    for i, y in ipairs(labels) do
      if y == p1 then
        n = n + 1
        if pred[i] == p2 then k = k + 1 end
      end
    end
    assert.is_true(n > 200, n)
    assert.is_true(k / n < 0.2, ("%d of %d real %d read as %d under %s"):format(k, n, p1, p2, d.view))
    -- the script's defaults are these
    local text = H.sh(BIN .. " scripts/anagram.lua --help")
    assert.truthy(text:find('(default: ' .. d.prompts .. ')', 1, true), text)
    assert.truthy(text:find('(default: ' .. d.view .. ')', 1, true), text)
  end)
end)
