-- fdm.unet: the Part B UNets of shared/spec/fun-with-diffusion.md (input
-- 1x28x28, hidden width D), as fdm.nn modules.
--
--   local unet = require "fdm.unet"
--   local net = unet.UnconditionalUNet(1, 128)            -- 7.89 M parameters
--   local y = net(x)                                      -- x [N,1,28,28]
--   local tc = unet.TimeConditionalUNet(1, 64)            -- y = tc(x, t), t [N] or [N,1] in [0,1]
--   local cc = unet.ClassConditionalUNet(1, 64, 10)       -- y = cc(x, c, t [, mask])
--                                                         -- c one-hot [N,10] float, mask [N] (0 drops c)
--
-- Module and parameter names are those of bench/torch_bench.py (the same
-- model in PyTorch), so state dicts move between the two by name:
--   in_block, down1, down2, flatten, unflatten, up1, up2, out_block, out_conv,
--   fc1_t, fc2_t (time), fc1_c, fc2_c (class); every block keeps its layers in
--   a Sequential `net` (Conv = net.{0 Conv2d, 1 BatchNorm2d, 2 GELU}).
--
-- Conv -> BatchNorm -> GELU runs as the fused F.batch_norm_gelu where the
-- core provides it (set unet.fused = false to force the unfused ops).
local fdm = require "fdm"
local nn = fdm.nn

local unet = { fused = true }

-- gelu(bn(x)) with exactly BatchNorm2d:forward's bookkeeping (running stats,
-- num_batches_tracked, momentum) but one fused op.
local function bn_gelu(bn, x)
  local F = fdm.F
  local fused = unet.fused and F.batch_norm_gelu
  if not fused then return F.gelu(bn(x)) end
  local factor = bn.momentum or 0.0
  if bn.training and bn.track_running_stats and bn.num_batches_tracked ~= nil then
    fdm.no_grad(function() bn.num_batches_tracked:add_(1) end)
    if bn.momentum == nil then factor = 1.0 / bn.num_batches_tracked:item() end
  end
  local bn_training = bn.training or (bn.running_mean == nil and bn.running_var == nil)
  local use_stats = (not bn.training) or bn.track_running_stats
  return fused(x, use_stats and bn.running_mean or nil, use_stats and bn.running_var or nil,
    bn.weight, bn.bias, bn_training, factor, bn.eps)
end
unet._bn_gelu = bn_gelu

---------------------------------------------------------------- atomic ops
-- conv layer + BatchNorm2d + GELU in net = Sequential(conv, bn, gelu)
local function conv_bn_gelu_class(name, make_conv)
  local C = nn.Module:extend(name)
  function C:init(i, o)
    self.net = nn.Sequential(make_conv(i, o), nn.BatchNorm2d(o), nn.GELU())
    rawset(self, "_conv", self.net[1])   -- cached (not registered twice)
    rawset(self, "_bn", self.net[2])
  end
  function C:forward(x)
    return bn_gelu(self._bn, self._conv(x))
  end
  unet[name] = C
  return C
end

-- Conv: Conv2d k3 s1 p1, BN, GELU
conv_bn_gelu_class("Conv", function(i, o) return nn.Conv2d(i, o, 3, { stride = 1, padding = 1 }) end)
-- DownConv: Conv2d k3 s2 p1, BN, GELU
conv_bn_gelu_class("DownConv", function(i, o) return nn.Conv2d(i, o, 3, { stride = 2, padding = 1 }) end)
-- UpConv: ConvTranspose2d k4 s2 p1, BN, GELU
conv_bn_gelu_class("UpConv", function(i, o) return nn.ConvTranspose2d(i, o, 4, { stride = 2, padding = 1 }) end)
-- Unflatten: ConvTranspose2d k7 s7 p0 (1x1 -> 7x7), BN, GELU
local Unflatten = conv_bn_gelu_class("Unflatten",
  function(i, o) return nn.ConvTranspose2d(i, o, 7, { stride = 7, padding = 0 }) end)
local unflatten_init = Unflatten.init
function Unflatten:init(c, o) unflatten_init(self, c, o or c) end

-- Flatten: AvgPool 7 (7x7 -> 1x1) + GELU, no BatchNorm
local Flatten = nn.Module:extend("Flatten")
function Flatten:init()
  self.net = nn.Sequential(nn.AvgPool2d(7), nn.GELU())
end
function Flatten:forward(x) return self.net(x) end
unet.Flatten = Flatten

---------------------------------------------------------------- composites
local function seq_class(name, build)
  local C = nn.Module:extend(name)
  function C:init(i, o) self.net = build(i, o) end
  function C:forward(x) return self.net(x) end
  unet[name] = C
  return C
end

seq_class("ConvBlock", function(i, o) return nn.Sequential(unet.Conv(i, o), unet.Conv(o, o)) end)
seq_class("DownBlock", function(i, o) return nn.Sequential(unet.DownConv(i, o), unet.ConvBlock(o, o)) end)
seq_class("UpBlock", function(i, o) return nn.Sequential(unet.UpConv(i, o), unet.ConvBlock(o, o)) end)
-- FCBlock(i,o) = Linear(i,o), GELU, Linear(o,o)
seq_class("FCBlock", function(i, o) return nn.Sequential(nn.Linear(i, o), nn.GELU(), nn.Linear(o, o)) end)

---------------------------------------------------------------- models
local UNetBody = nn.Module:extend("UNetBody")
function UNetBody:init(in_channels, num_hiddens)
  in_channels, num_hiddens = in_channels or 1, num_hiddens or 128
  local D = num_hiddens
  self.in_channels, self.num_hiddens = in_channels, D
  self.in_block = unet.ConvBlock(in_channels, D)       -- e0 [D,28]
  self.down1 = unet.DownBlock(D, D)                    -- e1 [D,14]
  self.down2 = unet.DownBlock(D, 2 * D)                -- e2 [2D,7]
  self.flatten = unet.Flatten()                        -- [2D,1]
  self.unflatten = unet.Unflatten(2 * D)               -- u0 [2D,7]
  self.up1 = unet.UpBlock(4 * D, D)                    -- [D,14]
  self.up2 = unet.UpBlock(2 * D, D)                    -- [D,28]
  self.out_block = unet.ConvBlock(2 * D, D)
  self.out_conv = nn.Conv2d(D, in_channels, 3, { stride = 1, padding = 1 })  -- no BN, no GELU
end

-- the shared data flow; mod0/mod1 (optional) transform u0 and up1
function UNetBody:run(x, mod0, mod1)
  local s = x.shape
  assert(#s == 4 and s[3] == 28 and s[4] == 28,
    self.__name .. ": input must be [N, C, 28, 28], got [" .. table.concat(s, ", ") .. "]")
  local e0 = self.in_block(x)
  local e1 = self.down1(e0)
  local e2 = self.down2(e1)
  local u0 = self.unflatten(self.flatten(e2))
  if mod0 then u0 = mod0(u0) end
  local up1 = self.up1(fdm.cat({ e2, u0 }, 2))
  if mod1 then up1 = mod1(up1) end
  local up2 = self.up2(fdm.cat({ e1, up1 }, 2))
  return self.out_conv(self.out_block(fdm.cat({ e0, up2 }, 2)))
end
unet.UNetBody = UNetBody

local UnconditionalUNet = UNetBody:extend("UnconditionalUNet")
function UnconditionalUNet:forward(x) return self:run(x) end
unet.UnconditionalUNet = UnconditionalUNet

-- t [N], [N,1] (or a number, broadcast to the batch) -> [N,1] float32
local function time_column(t, n)
  if type(t) == "number" then return fdm.full({ n, 1 }, t) end
  if t.dtype ~= "float32" then t = t:float() end
  return t:reshape(t:numel(), 1)
end

-- [N, C] -> [N, C, 1, 1]
local function as_map(v)
  local s = v.shape
  return v:view(s[1], s[2], 1, 1)
end

local TimeConditionalUNet = UNetBody:extend("TimeConditionalUNet")
function TimeConditionalUNet:init(in_channels, num_hiddens)
  UNetBody.init(self, in_channels, num_hiddens)
  local D = self.num_hiddens
  self.fc1_t = unet.FCBlock(1, 2 * D)
  self.fc2_t = unet.FCBlock(1, D)
end
-- u0 = u0 * fc1_t(t); up1 = up1 * fc2_t(t)
function TimeConditionalUNet:forward(x, t)
  t = time_column(t, x.shape[1])
  local a = as_map(self.fc1_t(t))
  local b = as_map(self.fc2_t(t))
  return self:run(x, function(u) return u * a end, function(u) return u * b end)
end
unet.TimeConditionalUNet = TimeConditionalUNet

local ClassConditionalUNet = UNetBody:extend("ClassConditionalUNet")
function ClassConditionalUNet:init(in_channels, num_hiddens, num_classes)
  UNetBody.init(self, in_channels, num_hiddens)
  local D = self.num_hiddens
  self.num_classes = num_classes or 10
  self.fc1_t = unet.FCBlock(1, 2 * D)
  self.fc2_t = unet.FCBlock(1, D)
  self.fc1_c = unet.FCBlock(self.num_classes, 2 * D)
  self.fc2_c = unet.FCBlock(self.num_classes, D)
end
-- u0 = fc1_c(c) * u0 + fc1_t(t); up1 = fc2_c(c) * up1 + fc2_t(t).
-- mask [N] (1 keeps, 0 zeroes the class vector); the training loop draws it
-- with unet.class_dropout_mask(N, 0.1). Without a mask c is used as given.
function ClassConditionalUNet:forward(x, c, t, mask)
  local n = x.shape[1]
  if c.dtype ~= "float32" then c = c:float() end
  if mask ~= nil then
    if mask.dtype ~= "float32" then mask = mask:float() end
    c = c * mask:reshape(n, 1)
  end
  t = time_column(t, n)
  local a_c, a_t = as_map(self.fc1_c(c)), as_map(self.fc1_t(t))
  local b_c, b_t = as_map(self.fc2_c(c)), as_map(self.fc2_t(t))
  return self:run(x, function(u) return a_c * u + a_t end, function(u) return b_c * u + b_t end)
end
unet.ClassConditionalUNet = ClassConditionalUNet

-- [N] float mask: 0 with probability p (drop the class), 1 otherwise; on
-- device (default the CPU: the same numbers on any device)
function unet.class_dropout_mask(n, p, device)
  return fdm.ge(fdm.rand(n, { device = device or "cpu" }), p or 0.1):float()
end

return unet
