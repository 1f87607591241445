-- fdm.flow: Part B's training objectives and samplers
-- (shared/spec/fun-with-diffusion.md, Part B 1.2-2.6).
--
-- One-step denoiser (1.2):
--   flow.add_noise(x, sigma)              z = x + sigma * eps
--   flow.denoiser_loss(net, x, sigma)     L2(net(z), x), noise drawn per batch;
--                                         sigma = "pure" trains on z = eps (1.2.3)
--   flow.denoise(net, z)                  net(z) in eval mode, no grad
-- Flow matching (2.1-2.5), x1 data, x0 ~ N(0, I), t ~ U[0, 1]:
--   flow.interpolate(x1 [, t, x0])        x_t = (1-t) x0 + t x1, target u = x1 - x0
--                                         -> xt, t [N], u
--   flow.time_loss(net, x1)               L2(net(x_t, t), u)
--   flow.class_loss(net, x1, labels [, p_uncond = 0.1 [, num_classes = 10]])
--                                         L2(net(x_t, onehot(c), t, mask), u), c
--                                         zeroed with probability p_uncond
-- Samplers (eval mode, no grad; the net's train/eval mode is put back):
--   flow.sample_time(net, n, {steps = 300, x0 =, device =, snapshots =})
--       x ~ N(0,I); for i = 0..T-1: x += u(x, i/T) / T     (2.3)
--   flow.sample_class(net, labels, {steps = 300, guidance = 5, x0 =, ...})
--       u = u_uncond + g (u_cond - u_uncond), c = 0 for the unconditional
--       pass (2.6); both passes run as one batch of 2N
--   graph = true (either sampler): one step captured as a CUDA graph and
--       replayed (fdm.graph; t and g are device tensors filled per step);
--       the same numbers as without
-- Both return x [N,1,28,28] (not clamped) and, with `snapshots = k`, a list of
-- the intermediate x every k steps (the first is x0, the last the result).
--   flow.with_rng(seed, fn, ...)          runs fn with the global generator
--                                         seeded, then puts the previous
--                                         generator state back
local fdm = require "fdm"
local F = fdm.F

local flow = {}

---------------------------------------------------------------- helpers
function flow.with_rng(seed, fn, ...)
  local saved = fdm.get_rng_state()
  if seed ~= nil then fdm.manual_seed(seed) end
  local res = table.pack(pcall(fn, ...))
  fdm.set_rng_state(saved)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- runs fn(...) with net in eval mode and no grad, restoring its mode
function flow.evaluating(net, fn, ...)
  local was = net.training
  net:eval()
  local args = table.pack(...)
  local res = table.pack(pcall(fdm.no_grad, function() return fn(table.unpack(args, 1, args.n)) end))
  net:train(was)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- labels: int64 tensor [N] or a Lua list of 0-based class ids -> float32 [N, n]
-- Inside a graph capture the labels cannot be read on the host (F.one_hot
-- checks them there): the same rows come from comparing with 0 .. n-1.
function flow.one_hot(labels, num_classes, device)
  if type(labels) == "table" then labels = fdm.tensor(labels, { dtype = "int64" }) end
  if labels.dtype ~= "int64" then labels = labels:to("int64") end
  local c
  if fdm.graph_capturing() then
    local n = num_classes or 10
    c = fdm.eq(labels:reshape(labels:numel(), 1), fdm.arange(n, { device = labels.device })):float()
  else
    c = F.one_hot(labels, num_classes or 10):float()
  end
  if device and c.device ~= device then c = c:to(device) end
  return c
end

local function col4(t)   -- [N] -> [N,1,1,1]
  return t:reshape(t:numel(), 1, 1, 1)
end

---------------------------------------------------------------- one-step denoiser
function flow.add_noise(x, sigma)
  return x + fdm.randn_like(x) * sigma
end

-- sigma: a number (z = x + sigma eps) or "pure" (z = eps, 1.2.3)
function flow.denoiser_loss(net, x, sigma)
  local z
  if sigma == "pure" then z = fdm.randn_like(x) else z = flow.add_noise(x, sigma) end
  return F.mse_loss(net(z), x)
end

function flow.denoise(net, z)
  return flow.evaluating(net, function() return net(z) end)
end

---------------------------------------------------------------- flow matching
function flow.interpolate(x1, t, x0)
  local n = x1.shape[1]
  x0 = x0 or fdm.randn_like(x1)
  t = t or fdm.rand(n, { device = x1.device })
  local tt = col4(t)
  local xt = x0 * (1 - tt) + x1 * tt
  return xt, t, x1 - x0
end

function flow.time_loss(net, x1)
  local xt, t, u = flow.interpolate(x1)
  return F.mse_loss(net(xt, t), u)
end

function flow.class_loss(net, x1, labels, p_uncond, num_classes)
  local n = x1.shape[1]
  local c = flow.one_hot(labels, num_classes or 10, x1.device)
  local xt, t, u = flow.interpolate(x1)
  local mask = fdm.ge(fdm.rand(n, { device = x1.device }), p_uncond or 0.1):float()
  return F.mse_loss(net(xt, c, t, mask), u)
end

---------------------------------------------------------------- samplers
-- graph: nil/false (eager), true (a CUDA graph on x's device) or the options
-- of fdm.graph ({emulate = true} in the tests) -> the options, or nil
local function graph_opts(graph, device)
  if not graph then return nil end
  local o = { device = device }
  if type(graph) == "table" then for k, v in pairs(graph) do o[k] = v end end
  require("fdm.graph").check(o)
  return o
end

-- x += velocity(x, t) / steps for t = i / steps, i = 0 .. steps-1, with x
-- updated in place and t a tensor tt filled before each step; with graph
-- options, step 0 runs eagerly (warm-up), step 1 is captured, the rest replay
local function euler(velocity, x, tt, steps, snapshots, gopts)
  local snaps = snapshots and { x:clone() } or nil
  local function step() x:copy_(x + velocity(x, tt) * (1 / steps)) end
  local g
  for i = 0, steps - 1 do
    tt:fill_(i / steps)
    if not gopts or i == 0 then step()
    elseif not g then g = fdm.graph(step, gopts)
    else g:replay() end
    if snaps and ((i + 1) % snapshots == 0 or i == steps - 1) then snaps[#snaps + 1] = x:clone() end
  end
  if g then g:free() end
  return x, snaps
end

local function start_noise(n, opts)
  if opts.x0 then return opts.x0:clone() end
  local shape = opts.shape or { 1, 28, 28 }
  return fdm.randn({ n, shape[1], shape[2], shape[3] }, { device = opts.device or "cpu" })
end

local function sampler_device(opts) return opts.device or (opts.x0 and opts.x0.device) or "cpu" end

function flow.sample_time(net, n, opts)
  opts = opts or {}
  local steps = opts.steps or 300
  local gopts = graph_opts(opts.graph, sampler_device(opts))
  return flow.evaluating(net, function()
    local x = start_noise(n, opts)
    local tt = fdm.zeros({ x.shape[1] }, { device = x.device })
    return euler(function(xc, t) return net(xc, t) end, x, tt, steps, opts.snapshots, gopts)
  end)
end

-- the guidance scale is a tensor too (as t), so a graph reads it on the device
function flow.sample_class(net, labels, opts)
  opts = opts or {}
  local steps = opts.steps or 300
  local nc = opts.num_classes or net.num_classes or 10
  local gopts = graph_opts(opts.graph, sampler_device(opts))
  return flow.evaluating(net, function()
    local c = flow.one_hot(labels, nc, opts.device)
    local n = c.shape[1]
    local x = start_noise(n, opts)
    local cc = fdm.cat({ c, fdm.zeros_like(c) }, 1)           -- conditional, then c = 0
    local tt = fdm.zeros({ 2 * n }, { device = x.device })
    local g = fdm.full({}, opts.guidance or 5, { device = x.device })
    return euler(function(xc, t)
      local u = net(fdm.cat({ xc, xc }, 1), cc, t)
      local uc, uu = u:narrow(1, 1, n), u:narrow(1, n + 1, n)
      return uu + (uc - uu) * g
    end, x, tt, steps, opts.snapshots, gopts)
  end)
end

return flow
