-- fdm.graph_step: the training step of fdm.train and train_ddpm, eager or as a CUDA graph
-- (--graph). The first step runs eagerly (cuDNN's algorithm search, cuBLAS
-- and the optimizer's state are set up outside any capture), the second
-- (of the same batch shape) is captured (and runs), the rest replay it with
-- the batch copied into the captured inputs. A batch of another size (an
-- epoch's last, smaller one) runs eagerly. The optimizer keeps its lr and step on the device
-- (opt:use_device_scalars()), so replays follow the scheduler and count
-- Adam's steps. Losses are copied into a device buffer after each step and
-- read every `every` steps (and at the end of an epoch) instead of waiting
-- for the GPU at every step.
local fdm = require "fdm"

local S = {}
S.__index = S

local function eager_step(loss_fn, opt, x, y, i)
  local loss = loss_fn(x, y, i)
  opt:zero_grad()
  loss:backward()
  opt:step()
  return loss
end

-- graph: nil (eager) or fdm.graph's options ({device =, emulate =})
function S.new(loss_fn, opt, device, graph, every)
  local self = setmetatable({ loss_fn = loss_fn, opt = opt, device = device, graph = graph,
    every = every or 50, pending = 0, losses = {} }, S)
  if graph then
    require("fdm.graph").check(graph)
    opt:use_device_scalars()
    self.buf = fdm.zeros({ self.every }, { device = device })
  end
  return self
end

local function same_shape(a, b)
  if #a.shape ~= #b.shape then return false end
  for i = 1, #a.shape do if a.shape[i] ~= b.shape[i] then return false end end
  return true
end

-- the step's loss tensor (graph mode: the captured one, valid until the next step)
function S:step(x, y, i)
  if not self.graph then
    if self.device ~= "cpu" then x, y = x:to(self.device), y:to(self.device) end
    return eager_step(self.loss_fn, self.opt, x, y, i)
  end
  local loss
  if self.g and same_shape(x, self.x) and same_shape(y, self.y) then
    self.x:copy_(x:to(self.device))   -- an upload (the loader's batches are on the CPU)
    self.y:copy_(y:to(self.device))
    self.opt:write_device_scalars()
    loss = self.g:replay()
  elseif self.g or not (self.warm and same_shape(x, self.warm[1]) and same_shape(y, self.warm[2])) then
    -- the warm-up (of this batch shape: the capture must find cuDNN's choices
    -- for it made), or a batch of another shape than the captured one
    if not self.g then self.warm = { x, y } end   -- shapes only: same_shape reads nothing else
    loss = eager_step(self.loss_fn, self.opt, x:to(self.device), y:to(self.device), i)
  else
    self.x, self.y = x:to(self.device):clone(), y:to(self.device):clone()   -- the captured inputs
    local sx, sy = self.x, self.y
    self.opt:write_device_scalars()   -- the captured step reads the lr, it does not write it
    self.g, loss = fdm.graph(function() return eager_step(self.loss_fn, self.opt, sx, sy, i) end, self.graph)
  end
  self:record(loss)
  return loss
end

-- the loss into the device buffer; a full buffer is read
function S:record(loss)
  self.pending = self.pending + 1
  fdm.no_grad(function() self.buf:narrow(1, self.pending, 1):copy_(loss:detach():reshape(1)) end)
  if self.pending == self.every then self.losses = self:flush() end
end

-- the losses read so far and not yet taken, oldest first (graph mode)
function S:take()
  local out = self.losses
  self.losses = {}
  return out
end

-- reads the buffer now (a wait for the GPU), then take()
function S:flush()
  if self.pending > 0 then
    for _, v in ipairs(self.buf:narrow(1, 1, self.pending):tolist()) do self.losses[#self.losses + 1] = v end
    self.pending = 0
  end
  return self:take()
end

function S:free()
  if self.g then self.g:free() end
  self.g = nil
end

return S
