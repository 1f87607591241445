-- bench/unet_step.lua: one of the spec's UNets with its training step
-- (forward, MSE, backward, Adam) and its eval forward on random data, for the
-- CPU benchmarks (bench/bench.lua, tools/step_cpu.lua).
--   local make = dofile("bench/unet_step.lua")
--   local model, train_step, eval_step = make(kind, D, N)   -- kind: "uncond", "tc" or "cc"
local fdm = rawget(_G, "fdm") or require "fdm"
local unet = require "fdm.unet"
local F = fdm.F

return function(kind, D, N)
  fdm.manual_seed(0)
  local m
  if kind == "uncond" then m = unet.UnconditionalUNet(1, D)
  elseif kind == "tc" then m = unet.TimeConditionalUNet(1, D)
  else m = unet.ClassConditionalUNet(1, D, 10) end
  local args = { fdm.randn(N, 1, 28, 28) }
  if kind == "tc" then args[2] = fdm.rand(N, 1) end
  if kind == "cc" then
    args[2] = F.one_hot(fdm.randint(0, 10, { N }), 10):float()
    args[3] = fdm.rand(N, 1)
    args[4] = unet.class_dropout_mask(N, 0.1)
  end
  local target = fdm.randn(N, 1, 28, 28)
  local opt = fdm.optim.Adam(m:parameters(), { lr = 1e-4 })
  local function train_step()
    opt:zero_grad()
    local loss = F.mse_loss(m(table.unpack(args)), target)
    loss:backward()
    opt:step()
  end
  local function eval_step()
    return fdm.no_grad(function() return m(table.unpack(args)) end)
  end
  return m, train_step, eval_step
end
