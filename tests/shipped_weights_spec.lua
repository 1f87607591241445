-- The weights fdm ships still do what their provenance notes say.
local fdm = require "fdm"
local D = require "fdm.diffusion"
local M = require "fdm.ddpm_model"
local classifier = require "fdm.classifier"

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
end)

describe("shipped flow-matching weights", function()
  it("the class-conditioned flow model draws the digit it is asked for (CFG 5, 40 Euler steps)", function()
    local model, meta, D = classifier.load_flow_class("weights/flow_class_mnist.safetensors")
    assert.are.equal(64, D)
    assert.are.equal(2019201, model:num_parameters())
    local labels = {}
    for k = 1, 20 do labels[k] = (k - 1) % 10 end
    local x = classifier.sample_flow_class(model, labels, { cfg = 5, steps = 40, seed = 3, progress = false })
    local net = classifier.load()
    local acc = classifier.accuracy(net, x, fdm.tensor(labels, { dtype = "int64" }))
    assert.is_true(acc >= 0.95, ("accuracy %.2f"):format(acc))
  end)
end)
