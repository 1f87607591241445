-- Every script's command line: --help lists exactly the options the script
-- reads; a misspelled option or a bad value is one line, exit 2, no stack
-- trace; user mistakes found later (weights of another kind, --resume with
-- other options, out-of-range values) are the same.
local H = require "helpers"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

-- runs fdm with args (fake data); returns stdout, stderr, exit code
local function run(args, env)
  local words = { "FDM_FAKE_DATA=1" }
  for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. q(v) end
  words[#words + 1] = q(BIN)
  for _, a in ipairs(args) do words[#words + 1] = q(a) end
  local errf = os.tmpname()
  local p = assert(io.popen(table.concat(words, " ") .. " </dev/null 2>" .. errf .. "; echo \"__rc=$?\"", "r"))
  local out = p:read("a")
  p:close()
  local f = assert(io.open(errf, "rb"))
  local err = f:read("a")
  f:close()
  os.remove(errf)
  local code = tonumber(out:match("__rc=(%d+)\n$"))
  return out:gsub("__rc=%d+\n$", ""), err, code
end

-- a usage error: status 2, one line on stderr, no trace
local function assert_usage_error(args, pattern)
  local out, err, code = run(args)
  local label = table.concat(args, " ") .. " -> " .. err
  assert.are.equal(2, code, label .. out)
  assert.truthy(err:match("^fdm: [^\n]+\n$"), "not one line: " .. label)
  assert.falsy(err:find("traceback", 1, true), label)
  if pattern then assert.truthy(err:find(pattern, 1, true), "expected '" .. pattern .. "': " .. label) end
  return err
end

local function scripts()
  local list = {}
  local p = assert(io.popen("ls scripts/*.lua scripts/partA/*.lua"))
  for f in p:lines() do
    if f ~= "scripts/partA/common.lua" then list[#list + 1] = f end   -- common.lua is a library
  end
  p:close()
  return list
end

-- the options of a --help listing: {name = metavar}
local function options_of(help)
  local opts, order = {}, {}
  for name, rest in help:gmatch("\n  %-%-([%w%-]+)([^\n]*)") do
    if name ~= "help" then
      opts[name] = rest:match("^ (%S+)") or ""
      order[#order + 1] = name
    end
  end
  return opts, order
end

describe("every script's command line", function()
  local list = scripts()

  it("finds the scripts", function()
    assert.is_true(#list >= 24, #list .. " scripts")
  end)

  it("--help: exit 0, the options on stdout, nothing on stderr", function()
    for _, s in ipairs(list) do
      local out, err, code = run({ s, "--help" })
      assert.are.equal(0, code, s .. ": " .. err)
      assert.are.equal("", err, s)
      assert.truthy(out:match("^usage: fdm "), s)
      local _, order = options_of(out)
      assert.is_true(#order >= 1, s .. " lists no options")
    end
  end)

  it("a misspelled option and a bad value: exit 2, one line naming what is accepted", function()
    for _, s in ipairs(list) do
      local out = run({ s, "--help" })
      local opts, order = options_of(out)
      local first = order[1]
      local err = assert_usage_error({ s, "--" .. first .. "x", "1" }, "unknown option --" .. first .. "x")
      assert.truthy(err:find("--" .. first, 1, true), err)
      local int_opt
      for _, name in ipairs(order) do if opts[name] == "N" or opts[name] == "K" then int_opt = name; break end end
      assert(int_opt, s .. " has no integer option to give a bad value")
      assert_usage_error({ s, "--" .. int_opt, "abc" }, "--" .. int_opt .. " expects an integer")
    end
  end)

  -- What each helper the scripts call reads of the parsed options: an option
  -- is read when the script names args.<key> (or opts./o.) or calls a helper
  -- that reads it.
  local HELPERS = {
    ["C.load_model"] = { "model", "device", "upsampler", "precision" }, ["C.seed"] = { "seed" }, ["C.sampler_opts"] = { "threshold" },
    ["C.timesteps"] = { "steps" }, ["C.sdedit_row"] = { "steps", "cfg", "threshold" },
    ["C.save_sdedit_grid"] = { "steps", "cfg", "threshold", "i_starts", "out" },
    ["C.anagram"] = { "steps", "cfg", "threshold" }, ["C.out_file"] = { "out" },
    ["C.two_prompts"] = { "prompts" }, ["C.hybrid_filter"] = { "filter", "keep", "kernel", "sigma" }, ["C.image_prompt"] = { "prompt" }, ["C.prompt_title"] = { "prompt" },
    ["train.run"] = { "epochs", "resume", "out", "device", "max_batches", "stop_after", "autocast", "graph" },
    ["train.load_data"] = { "dataset", "subset" },
  }
  local function slurp(p)
    local f = assert(io.open(p, "rb"))
    local s = f:read("a")
    f:close()
    return s
  end

  it("--help lists exactly the options the script reads", function()
    for _, s in ipairs(list) do
      local src = slurp(s)
      local out = run({ s, "--help" })
      local opts = options_of(out)
      local read = {}
      for key in src:gmatch("[%w_]+%.given%.([%w_]+)") do read[key] = true end
      for key in src:gmatch("%f[%w_]args%.([%w_]+)") do read[key] = true end
      for key in src:gmatch("%f[%w_]opts%.([%w_]+)") do read[key] = true end
      for key in src:gmatch("%f[%w_]o%.([%w_]+)") do read[key] = true end
      for fn, keys in pairs(HELPERS) do
        local called = src:find(fn:gsub("%.", "%%.") .. "%s*[%({]")   -- f(...) or f { ... }
        if called then for _, k in ipairs(keys) do read[k] = true end end
      end
      for name in pairs(opts) do
        local key = name:gsub("%-", "_")
        assert.is_true(read[key] == true, s .. " lists --" .. name .. " but does not read it")
      end
    end
  end)
end)

describe("user mistakes after parsing are usage errors too", function()
  it("eval.lua --model with a DDPM's weights names both kinds", function()
    local err = assert_usage_error({ "scripts/eval.lua", "--model", "weights/ddpm_mnist.safetensors" })
    assert.truthy(err:find("holds ddpm", 1, true), err)
    assert.truthy(err:find("expected flow_class or flow_time or denoiser", 1, true), err)
    assert_usage_error({ "scripts/eval.lua", "--model", "weights/nope.safetensors" }, "no weights at 'weights/nope.safetensors'")
  end)

  it("out-of-range and malformed values: --i-starts 1,50, --sigmas 0.5,abc, prompts", function()
    assert_usage_error({ "scripts/partA/1_7_sdedit.lua", "--i-starts", "1,50" }, "each in 0..32, got '1,50'")
    assert_usage_error({ "scripts/noising.lua", "--sigmas", "0.5,abc" }, "--sigmas expects comma-separated numbers")
    assert_usage_error({ "scripts/anagram.lua", "--prompts", "6" }, "--prompts expects two comma-separated prompts")
    assert_usage_error({ "scripts/partA/1_5_sampling.lua", "--prompt", "a cat" }, "unknown prompt 'a cat'")
    assert_usage_error({ "scripts/partA/1_1_forward.lua", "--model", "weights/mnist_classifier.safetensors" },
      "holds classifier")
  end)

  it("--resume with other options than the checkpoint's", function()
    local d = os.tmpname()
    os.remove(d)
    local _, err, code = run({ "scripts/flow_time.lua", "--hidden", "4", "--subset", "64", "--batch", "64",
      "--epochs", "2", "--stop-after", "1", "--samples", "2", "--steps", "2", "--out", d })
    assert.are.equal(0, code, err)
    local msg = assert_usage_error({ "scripts/flow_time.lua", "--hidden", "8", "--subset", "64", "--batch", "64",
      "--epochs", "2", "--samples", "2", "--steps", "2", "--out", d, "--resume" }, "was made with other settings")
    assert.truthy(msg:find("hidden: checkpoint 4, now 8", 1, true), msg)
    os.execute("rm -rf " .. q(d))
    assert_usage_error({ "scripts/flow_time.lua", "--out", d, "--resume" }, "--resume: no checkpoint at")
  end)

  it("FDM_DEBUG=1 keeps the stack trace of a usage error", function()
    local _, err, code = run({ "scripts/noising.lua", "--sigmas", "x" }, { FDM_DEBUG = "1" })
    assert.are.equal(2, code)
    assert.truthy(err:find("stack traceback:", 1, true), err)
  end)
end)
