-- The weights fdm ships still do what their provenance notes say.
local fdm = require "fdm"
local D = require "fdm.diffusion"
local M = require "fdm.ddpm_model"
local classifier = require "fdm.classifier"
local models = require "fdm.models"
local H = require "helpers"
local BIN = os.getenv("FDM_BIN") or "build/fdm"

describe("shipped weights", function()
  it("the MNIST DDPM draws the digit it is asked for (CFG 7, 20 steps)", function()
    local model = M.load("weights/ddpm_mnist.safetensors")
    local conds = {}
    for rep = 1, 2 do
      for d = 0, 9 do conds[#conds + 1] = model:encode(tostring(d)) end
    end
    local cond = fdm.cat(conds, 1)
    fdm.manual_seed(7)
    local x = fdm.no_grad(function()
      return D.sample(model, cond:size(1), { cond = cond, uncond = model:encode(""), cfg = 7, steps = 20 })
    end)
    local net = classifier.load()
    local labels = fdm.arange(10):float():view(1, 10):expand(2, 10):reshape(20):long()
    local acc = classifier.accuracy(net, (x + 1) / 2, labels)
    assert.is_true(acc >= 0.95, ("accuracy %.2f"):format(acc))
  end)
  it("--precision bf16 / fp16 (fdm.autocast around each call) keeps its noise estimate within half precision", function()
    local model = M.load("weights/ddpm_mnist.safetensors", { precision = "bf16" })
    assert.are.equal("bf16", model.precision)
    fdm.manual_seed(9)
    local x, c = fdm.randn(4, 1, 28, 28), model:encode("7")
    local function rel(a, b) return (a - b):norm():item() / b:norm():item() end
    local eb = fdm.no_grad(function() return model(x, 500, c) end)
    model:set_precision("fp16")
    local eh = fdm.no_grad(function() return model(x, 500, c) end)
    model:set_precision("fp32")
    local e32 = fdm.no_grad(function() return model(x, 500, c) end)
    local rb, rh = rel(eb, e32), rel(eh, e32)
    assert.is_true(rb > 0 and rb < 0.03, "bf16 vs fp32: " .. rb)
    assert.is_true(rh > 0 and rh < rb, ("fp16 %g, bf16 %g"):format(rh, rb))
    -- the scripts take it as an option
    local dir = H.tmpdir()
    local out, rc = H.sh(BIN .. " scripts/anagram.lua --precision bf16 --steps 4 --out " .. dir .. "/anagram.png")
    os.execute("rm -rf " .. dir)
    assert.are.equal(0, rc, out)
  end)
end)

describe("shipped flow-matching weights", function()
  it("the class-conditioned flow model draws the digit it is asked for (CFG 5, 40 Euler steps)", function()
    local model, meta, D = classifier.load_flow_class("weights/flow_class_mnist.safetensors")
    assert.are.equal(64, D)
    assert.are.equal(2019201, model:num_parameters())
    assert.are.equal("float16", meta["fdm.stored_dtype"])
    local labels = {}
    for k = 1, 20 do labels[k] = (k - 1) % 10 end
    local x = classifier.sample_flow_class(model, labels, { cfg = 5, steps = 40, seed = 3, progress = false })
    local net = classifier.load()
    local acc = classifier.accuracy(net, x, fdm.tensor(labels, { dtype = "int64" }))
    assert.is_true(acc >= 0.95, ("accuracy %.2f"):format(acc))
  end)
end)

describe("shipped denoiser (Part B 1.2.1, full recipe, float16)", function()
  it("loads as the spec's UnconditionalUNet D=128 and denoises sigma 0.5 test digits", function()
    local net, info = models.load("weights/denoiser_mnist.safetensors", { kinds = { "denoiser" } })
    assert.are.equal(128, info.hidden)
    assert.are.equal(7891073, net:num_parameters())
    assert.are.equal("float16", info.meta["fdm.stored_dtype"])
    local ev = require "fdm.denoiser_eval"
    local rows = ev.measure(net, { n = 64, sigmas = { 0.5 }, seed = 1 })
    -- the noisy input is about 0.116 away; the trained denoiser far closer
    assert.is_true(rows[1].mse < 0.02, ("MSE %.4f"):format(rows[1].mse))
    assert.is_true(rows[1].noisy_mse > 0.1)
  end)

  it("draws its section's pictures (denoiser.lua --weights: test results and the sigma sweep)", function()
    local dir = H.tmpdir()
    local out, rc = H.sh(BIN .. " scripts/denoiser.lua --weights weights/denoiser_mnist.safetensors --show 3 --out " .. dir)
    assert.are.equal(0, rc, out)
    assert.truthy(H.exists(dir .. "/test_results.png"), out)
    assert.truthy(H.exists(dir .. "/ood_sigmas.png"), out)
    assert.truthy(out:find("1.2.2 MSE(denoised, clean) per sigma", 1, true), out)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("shipped time-conditioned flow model (Part B 2.1-2.3, full recipe, float16)", function()
  it("loads as the spec's TimeConditionalUNet D=64 and draws digits of several kinds", function()
    local net, info = models.load("weights/flow_time_mnist.safetensors", { kinds = { "flow_time" } })
    assert.are.equal(64, info.hidden)
    assert.are.equal(1996417, net:num_parameters())
    assert.are.equal("float16", info.meta["fdm.stored_dtype"])
    local x = classifier.sample_flow_time(net, 20, { steps = 40, seed = 3, progress = false })
    assert.are.same({ 20, 1, 28, 28 }, x.shape)
    -- unconditional samples: the classifier reads them confidently as digits, and not all as one digit
    local probs = classifier.logits(classifier.load(), x):softmax(2)
    local top = probs:max(2)
    assert.is_true(top:mean():item() > 0.8, ("mean top probability %.2f"):format(top:mean():item()))
    local seen, kinds = {}, 0
    for _, d in ipairs(probs:argmax(2):tolist()) do
      if not seen[d] then seen[d] = true; kinds = kinds + 1 end
    end
    assert.is_true(kinds >= 5, kinds .. " different digits in 20 samples")
  end)

  it("draws its section's picture (eval.lua --model: a grid of samples read by the classifier)", function()
    local dir = H.tmpdir()
    local out, rc = H.sh(BIN .. " scripts/eval.lua --model weights/flow_time_mnist.safetensors --n 10 --steps 20" ..
      " --ref-n 200 --baseline 0 --out " .. dir .. "/grid.png")
    assert.are.equal(0, rc, out)
    assert.truthy(H.exists(dir .. "/grid.png"), out)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("weight-file metadata (fdm.weights)", function()
  local W = require "fdm.weights"
  local cli = require "fdm.cli"
  local SHIPPED = {
    ["weights/ddpm_mnist.safetensors"] = { kind = "ddpm", architecture = "ClassConditionalUNet",
      sizes = { in_channels = "1", hidden = "32", num_classes = "10" } },
    ["weights/flow_class_mnist.safetensors"] = { kind = "flow_class", architecture = "ClassConditionalUNet",
      sizes = { in_channels = "1", hidden = "64", num_classes = "10" } },
    ["weights/denoiser_mnist.safetensors"] = { kind = "denoiser", architecture = "UnconditionalUNet",
      sizes = { in_channels = "1", hidden = "128" } },
    ["weights/flow_time_mnist.safetensors"] = { kind = "flow_time", architecture = "TimeConditionalUNet",
      sizes = { in_channels = "1", hidden = "64" } },
    ["weights/mnist_classifier.safetensors"] = { kind = "classifier", architecture = "MnistClassifier",
      sizes = { conv1 = "32", conv2 = "64", features = "128", num_classes = "10" } },
  }
  local LOADERS = {
    ddpm = function(p) return M.load(p) end,
    flow_class = function(p) return classifier.load_flow_class(p) end,
    classifier = function(p) return classifier.load(p) end,
    denoiser = function(p) return models.load(p, { kinds = { "denoiser" } }) end,
    flow_time = function(p) return models.load(p, { kinds = { "flow_time" } }) end,
  }

  local function usage_error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    assert.is_true(cli.is_usage_error(err), tostring(err))
    return tostring(err)
  end

  it("every shipped file says its kind, architecture and sizes, and they match its tensors", function()
    local p = io.popen("ls weights/*.safetensors")
    local files = {}
    for f in p:lines() do files[#files + 1] = f end
    p:close()
    assert.are.equal(5, #files)
    for _, f in ipairs(files) do
      local want = assert(SHIPPED[f], f .. " is shipped but not described here")
      local tensors, meta = fdm.io.load_safetensors(f)
      assert.are.equal(want.kind, meta["fdm.kind"], f)
      assert.are.equal(want.architecture, meta["fdm.architecture"], f)
      for k, v in pairs(want.sizes) do assert.are.equal(v, meta["fdm." .. k], f .. " fdm." .. k) end
      -- sizes agree with the tensors
      if want.architecture == "ClassConditionalUNet" then
        assert.are.equal(tonumber(meta["fdm.hidden"]), tensors["in_block.net.0.net.0.weight"].shape[1])
        assert.are.equal(tonumber(meta["fdm.num_classes"]), tensors["fc1_c.net.0.weight"].shape[2])
      elseif want.architecture == "UnconditionalUNet" then
        assert.are.equal(tonumber(meta["fdm.hidden"]), tensors["in_block.net.0.net.0.weight"].shape[1])
        assert.is_nil(tensors["fc1_t.net.0.weight"])
      elseif want.architecture == "TimeConditionalUNet" then
        assert.are.equal(tonumber(meta["fdm.hidden"]), tensors["in_block.net.0.net.0.weight"].shape[1])
        assert.truthy(tensors["fc1_t.net.0.weight"])
        assert.is_nil(tensors["fc1_c.net.0.weight"])
      else
        assert.are.equal(tonumber(meta["fdm.features"]), tensors["fc1.weight"].shape[1])
      end
      assert.truthy(LOADERS[want.kind](f), f)
      -- the provenance note tells the same
      local note = assert(io.open((f:gsub("%.safetensors$", ".md")))):read("a")
      assert.truthy(note:find("`fdm.kind` = `" .. want.kind .. "`", 1, true), f .. ": note lacks fdm.kind")
    end
  end)

  it("a loader refuses an fdm file of another kind, naming both", function()
    for f, want in pairs(SHIPPED) do
      for kind, load in pairs(LOADERS) do
        if kind ~= want.kind then
          local err = usage_error_of(load, f)
          assert.truthy(err:find("holds " .. want.kind, 1, true), err)
          assert.truthy(err:find("needs " .. kind, 1, true), err)
        end
      end
    end
  end)

  it("a file without fdm metadata (a PyTorch export) loads when names and shapes match, else names the first mismatch", function()
    local d = os.tmpname()
    local tensors = fdm.io.load_safetensors("weights/flow_class_mnist.safetensors")
    fdm.io.save_safetensors(d, tensors, { format = "pt" })
    local model, _, D = classifier.load_flow_class(d)
    assert.are.equal(64, D)
    assert.are.equal(nil, W.kind_of(select(2, fdm.io.load_safetensors(d))))
    -- the same tensors, read as a DDPM: names and shapes match, so they are accepted
    assert.truthy(M.load(d))
    -- a wrong shape and a missing tensor: refused with the first mismatch
    tensors["out_conv.bias"] = fdm.zeros(2)
    fdm.io.save_safetensors(d, tensors, { format = "pt" })
    local err = usage_error_of(classifier.load_flow_class, d)
    assert.truthy(err:find("tensor out_conv.bias has shape [2], the model's is [1]", 1, true), err)
    tensors["out_conv.bias"] = nil
    fdm.io.save_safetensors(d, tensors, { format = "pt" })
    err = usage_error_of(classifier.load_flow_class, d)
    assert.truthy(err:find("it has no tensor out_conv.bias", 1, true), err)
    err = usage_error_of(classifier.load, "weights/ddpm_mnist.safetensors.nope")
    assert.truthy(err:find("no weights at", 1, true), err)
    os.remove(d)
  end)
end)
