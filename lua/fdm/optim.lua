-- fdm.optim: SGD, Adam, AdamW with torch.optim's (1.13) update formulas,
-- learning-rate schedulers, gradient clipping and an EMA of model weights.
--
--   local opt = fdm.optim.Adam(net:parameters(), {lr = 1e-3})
--   local sched = fdm.optim.CosineAnnealingLR(opt, 1000)
--   loss:backward(); opt:step(); opt:zero_grad(); sched:step()
--
-- Optimizer checkpoints: opt:state_dict() (PyTorch layout: state indexed from 0
-- in parameter order, and param_groups) or opt:state_tensors() (a flat
-- name -> tensor table for a safetensors file, plus a name -> string table of
-- exact hyperparameters for the file's metadata).

local fdm = require "fdm"   -- init.lua registers itself before loading this file

local optim = {}

local function no_grad(f) return fdm.no_grad(f) end

local function is_module(v)
  return type(v) == "table" and rawget(v, "_parameters") ~= nil
end

-- params: a module, a list of tensors, or a list of groups {params = {...}, lr = ...}
local function param_list(params)
  if is_module(params) then return params:parameters() end
  if type(params) == "userdata" then return { params } end
  assert(type(params) == "table", "optimizer: a list of tensors, a list of groups or a module expected")
  return params
end

local function copy_table(t)
  local o = {}
  for k, v in pairs(t) do
    if type(v) == "table" then o[k] = copy_table(v) else o[k] = v end
  end
  return o
end

---------------------------------------------------------------------------
-- Optimizer base
---------------------------------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer
optim.Optimizer = Optimizer

function Optimizer.new(cls, name, params, defaults)
  local self = setmetatable({ name = name, defaults = defaults, param_groups = {}, state = {},
    _device_scalars = {} }, cls)
  params = param_list(params)
  local groups
  if #params > 0 and type(params[1]) == "table" and not is_module(params[1]) then
    groups = params
  else
    groups = { { params = params } }
  end
  for _, g in ipairs(groups) do self:add_param_group(g) end
  return self
end

function Optimizer:add_param_group(group)
  local g = {}
  for k, v in pairs(group) do g[k] = v end
  g.params = param_list(group.params or {})
  for k, v in pairs(self.defaults) do
    if g[k] == nil then g[k] = (type(v) == "table") and copy_table(v) or v end
  end
  local seen = {}
  for _, pg in ipairs(self.param_groups) do for _, p in ipairs(pg.params) do seen[p] = true end end
  for i, p in ipairs(g.params) do
    assert(type(p) == "userdata", self.name .. ": parameter " .. i .. " is not a tensor")
    assert(not seen[p], self.name .. ": some parameters appear in more than one parameter group")
    seen[p] = true
  end
  table.insert(self.param_groups, g)
end

-- parameters in order, across groups (the indexing of state_dict)
function Optimizer:all_params()
  local out = {}
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do out[#out + 1] = p end
  end
  return out
end

-- set_to_none (default true): grads become nil; false zeroes them in place
function Optimizer:zero_grad(set_to_none)
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if set_to_none == false then
        local gr = p.grad
        if gr ~= nil then no_grad(function() gr:zero_() end) end
      else
        p:zero_grad()
      end
    end
  end
end

function Optimizer:step(closure)
  local loss
  if closure then loss = closure() end
  no_grad(function()
    for _, g in ipairs(self.param_groups) do
      -- an optimizer with update_group (Adam, AdamW) gets the group's
      -- parameters at once: {p, grad, state} each
      local items = self.update_group and {}
      for _, p in ipairs(g.params) do
        local grad = p.grad
        if grad ~= nil then
          local st = self.state[p]
          if st == nil then st = {}; self.state[p] = st end
          if items then items[#items + 1] = { p, grad, st } else self:update(p, grad, g, st) end
        end
      end
      if items and #items > 0 then self:update_group(items, g) end
    end
  end)
  return loss
end

---------------------------------------------------------------------------
-- device scalars (graphs): each group's lr and step count in one-element
-- tensors on its parameters' device, which the update reads there, so that a
-- replayed graph uses the lr of now and counts its steps (Adam, AdamW)
---------------------------------------------------------------------------

-- the step every parameter of group g has reached (all must agree)
local function group_step(self, g, gi)
  local step
  for _, p in ipairs(g.params) do
    local st = self.state[p]
    local s = st and st.step or 0
    if step ~= nil and s ~= step then
      error(string.format("%s:use_device_scalars: the parameters of group %d are at different steps (%d and %d)",
        self.name, gi, step, s), 3)
    end
    step = s
  end
  return step or 0
end

-- on: the lr and step of every group go to device tensors (made once, then
-- rewritten in place, so a graph captured with them stays valid); also after
-- load_state_dict to carry the loaded steps over. false: back to host values.
function Optimizer:use_device_scalars(on)
  if on == false then
    self:sync_device_scalars()
    self._device_scalars = {}
    return self
  end
  if not self.update_group then
    error(self.name .. ":use_device_scalars: only Adam and AdamW keep their lr and step on the device", 2)
  end
  no_grad(function()
    for gi, g in ipairs(self.param_groups) do
      local device = g.params[1] and g.params[1].device or "cpu"
      for _, p in ipairs(g.params) do
        if p.device ~= device then
          error(string.format("%s:use_device_scalars: group %d has parameters on '%s' and '%s'",
            self.name, gi, device, p.device), 3)
        end
      end
      local step = group_step(self, g, gi)
      local d = self._device_scalars[g]
      if not d then
        d = { lr = fdm.zeros({ 1 }, { device = device }), step = fdm.zeros({ 1 }, { dtype = "int64", device = device }) }
        self._device_scalars[g] = d
      end
      d.lr:fill_(g.lr)
      d.step:fill_(step)
    end
  end)
  return self
end

function Optimizer:uses_device_scalars() return next(self._device_scalars) ~= nil end

-- writes each group's current lr into its device tensor: before a graph replay
function Optimizer:write_device_scalars()
  no_grad(function()
    for g, d in pairs(self._device_scalars) do d.lr:fill_(g.lr) end
  end)
end

-- reads the device step counts back into the state's step (state_dict,
-- checkpoints); reads device memory, so not inside a graph capture
function Optimizer:sync_device_scalars()
  for g, d in pairs(self._device_scalars) do
    local step = math.tointeger(d.step:item())
    for _, p in ipairs(g.params) do
      local st = self.state[p]
      if st ~= nil and st.step ~= nil then st.step = step end
    end
  end
end

-- PyTorch-style state dict: {state = {[0] = {step=, exp_avg=...}, ...},
-- param_groups = {{lr=..., params = {0, 1, ...}}, ...}}; tensors are shared.
function Optimizer:state_dict()
  self:sync_device_scalars()
  local state, groups, idx = {}, {}, 0
  for gi, g in ipairs(self.param_groups) do
    local pg = {}
    for k, v in pairs(g) do
      if k ~= "params" then pg[k] = type(v) == "table" and copy_table(v) or v end
    end
    pg.params = {}
    for _, p in ipairs(g.params) do
      pg.params[#pg.params + 1] = idx
      local st = self.state[p]
      if st ~= nil then
        local s = {}
        for k, v in pairs(st) do s[k] = v end
        state[idx] = s
      end
      idx = idx + 1
    end
    groups[gi] = pg
  end
  return { state = state, param_groups = groups }
end

local function clone_value(v)
  if type(v) == "userdata" then return no_grad(function() return v:detach():clone() end) end
  return v
end

function Optimizer:load_state_dict(sd)
  assert(type(sd) == "table" and sd.state and sd.param_groups, "load_state_dict: {state=, param_groups=} expected")
  assert(#sd.param_groups == #self.param_groups,
    string.format("%s.load_state_dict: %d parameter groups in the state dict, %d in the optimizer",
      self.name, #sd.param_groups, #self.param_groups))
  local idmap = {}
  for gi, pg in ipairs(sd.param_groups) do
    local g = self.param_groups[gi]
    assert(#pg.params == #g.params, string.format(
      "%s.load_state_dict: group %d has %d parameters in the state dict, %d in the optimizer",
      self.name, gi, #pg.params, #g.params))
    for i, id in ipairs(pg.params) do idmap[id] = g.params[i] end
    for k, v in pairs(pg) do
      if k ~= "params" then g[k] = type(v) == "table" and copy_table(v) or v end
    end
  end
  self.state = {}
  for id, s in pairs(sd.state) do
    local p = idmap[id]
    assert(p ~= nil, self.name .. ".load_state_dict: state for unknown parameter " .. tostring(id))
    local st = {}
    for k, v in pairs(s) do
      st[k] = clone_value(v)
      if type(v) == "userdata" and v.device ~= p.device then st[k] = st[k]:to(p.device) end
    end
    self.state[p] = st
  end
  if self:uses_device_scalars() then self:use_device_scalars(true) end
end

local function numstr(x)
  if math.type(x) == "integer" then return string.format("%d", x) end
  return string.format("%.17g", x)
end

-- Flat checkpoint form: tensors "state.<i>.<name>" (i counts parameters
-- from 0, as in state_dict), "state.<i>.step" (int64), numeric hyperparameters
-- "param_groups.<g>.<name>" (float32; g from 0). The second value maps the
-- same hyperparameter names (and steps) to exact decimal strings, for a
-- safetensors __metadata__; load_state_tensors prefers it when given.
function Optimizer:state_tensors()
  self:sync_device_scalars()
  local t, meta = {}, {}
  local idx = 0
  for gi, g in ipairs(self.param_groups) do
    for k, v in pairs(g) do
      local key = string.format("param_groups.%d.%s", gi - 1, k)
      if type(v) == "number" then
        t[key] = fdm.tensor({ v }); meta[key] = numstr(v)
      elseif type(v) == "boolean" then
        t[key] = fdm.tensor({ v and 1 or 0 }, { dtype = "int64" }); meta[key] = tostring(v)
      elseif k ~= "params" and type(v) == "table" and type(v[1]) == "number" then
        t[key] = fdm.tensor(v)
        local parts = {}
        for i, x in ipairs(v) do parts[i] = numstr(x) end
        meta[key] = table.concat(parts, ",")
      end
    end
    for _, p in ipairs(g.params) do
      local st = self.state[p]
      if st ~= nil then
        for k, v in pairs(st) do
          local key = string.format("state.%d.%s", idx, k)
          if type(v) == "userdata" then
            t[key] = v
          elseif type(v) == "number" then
            t[key] = fdm.tensor({ v }, { dtype = math.type(v) == "integer" and "int64" or "float32" })
            meta[key] = numstr(v)
          end
        end
      end
      idx = idx + 1
    end
  end
  return t, meta
end

local function scalar_of(tensor)
  return tensor:reshape(-1)[1]:item()
end

function Optimizer:load_state_tensors(t, meta)
  meta = meta or {}
  local params = self:all_params()
  local new_state = {}
  local function num(key, tensor, want_int)
    local m = meta[key]
    if m ~= nil then
      if m == "true" then return true elseif m == "false" then return false end
      if m:find(",") then
        local out = {}
        for x in m:gmatch("[^,]+") do out[#out + 1] = tonumber(x) end
        return out
      end
      return tonumber(m)
    end
    if tensor:numel() > 1 then return tensor:tolist() end
    local v = scalar_of(tensor)
    if want_int then v = math.tointeger(v) or v end
    return v
  end
  for key, v in pairs(t) do
    local i, name = key:match("^state%.(%d+)%.(.+)$")
    if i then
      local p = params[tonumber(i) + 1]
      assert(p ~= nil, self.name .. ".load_state_tensors: state for unknown parameter " .. i)
      local st = new_state[p] or {}
      new_state[p] = st
      if name == "step" then
        st.step = num(key, v, true)
        if math.type(st.step) == "float" and st.step == math.floor(st.step) then st.step = math.tointeger(st.step) end
      else
        local c = clone_value(v)
        if c.device ~= p.device then c = c:to(p.device) end
        st[name] = c
      end
    else
      local gi, field = key:match("^param_groups%.(%d+)%.(.+)$")
      if gi then
        local g = self.param_groups[tonumber(gi) + 1]
        assert(g ~= nil, self.name .. ".load_state_tensors: unknown parameter group " .. gi)
        local cur = g[field]
        local val = num(key, v, math.type(cur) == "integer")
        if type(cur) == "boolean" and type(val) == "number" then val = val ~= 0 end
        g[field] = val
      end
    end
  end
  self.state = new_state
  if self:uses_device_scalars() then self:use_device_scalars(true) end
end

---------------------------------------------------------------------------
-- SGD
---------------------------------------------------------------------------

local SGD = setmetatable({}, { __index = Optimizer })
SGD.__index = SGD
optim.SGD = SGD

-- opts: lr (required), momentum = 0, dampening = 0, weight_decay = 0,
-- nesterov = false, maximize = false
function SGD.new(params, opts)
  opts = opts or {}
  assert(opts.lr, "SGD: lr is required")
  local d = { lr = opts.lr, momentum = opts.momentum or 0, dampening = opts.dampening or 0,
    weight_decay = opts.weight_decay or 0, nesterov = opts.nesterov or false, maximize = opts.maximize or false }
  assert(d.lr >= 0 and d.momentum >= 0 and d.weight_decay >= 0, "SGD: invalid hyperparameter")
  assert(not d.nesterov or (d.momentum > 0 and d.dampening == 0),
    "SGD: nesterov momentum requires a momentum and zero dampening")
  return Optimizer.new(SGD, "SGD", params, d)
end
setmetatable(SGD, { __index = Optimizer, __call = function(_, ...) return SGD.new(...) end })

function SGD:update(p, grad, g, st)
  local d = grad
  if g.maximize then d = fdm.neg(d) end
  if g.weight_decay ~= 0 then d = fdm.add(d, p, g.weight_decay) end
  local mom = g.momentum
  if mom ~= 0 then
    local buf = st.momentum_buffer
    if buf == nil then
      buf = d:clone()
      st.momentum_buffer = buf
    else
      buf:mul_(mom)
      buf:add_(d, 1 - g.dampening)
    end
    if g.nesterov then d = fdm.add(d, buf, mom) else d = buf end
  end
  p:add_(d, -g.lr)
end

---------------------------------------------------------------------------
-- Adam / AdamW
---------------------------------------------------------------------------

local function adam_defaults(name, opts, wd_default)
  opts = opts or {}
  local d = { lr = opts.lr or 1e-3, betas = opts.betas and { opts.betas[1], opts.betas[2] } or { 0.9, 0.999 },
    eps = opts.eps or 1e-8, weight_decay = opts.weight_decay or wd_default,
    amsgrad = opts.amsgrad or false, maximize = opts.maximize or false }
  assert(d.lr >= 0, name .. ": invalid learning rate " .. tostring(d.lr))
  assert(d.eps >= 0, name .. ": invalid epsilon " .. tostring(d.eps))
  assert(d.betas[1] >= 0 and d.betas[1] < 1, name .. ": invalid beta parameter at index 1")
  assert(d.betas[2] >= 0 and d.betas[2] < 1, name .. ": invalid beta parameter at index 2")
  assert(d.weight_decay >= 0, name .. ": invalid weight_decay " .. tostring(d.weight_decay))
  return d
end

-- shared Adam math (torch.optim._single_tensor_adam / adamw, 1.13):
--   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
--   denom = sqrt(v) / sqrt(1-b2^t) + eps;  p -= lr/(1-b1^t) * m/denom
-- two temporaries per parameter (g*g reused for the denominator, and m/denom);
-- 10 passes over the parameter's size
local function init_adam_state(p, g, st)
  if st.step ~= nil then return end
  st.step = 0
  st.exp_avg = fdm.zeros_like(p)
  st.exp_avg_sq = fdm.zeros_like(p)
  if g.amsgrad then st.max_exp_avg_sq = fdm.zeros_like(p) end
end

local function adam_update(p, grad, g, st, decoupled)
  init_adam_state(p, g, st)
  st.step = st.step + 1
  -- one fused pass in C (runtime/lua/loptim.c, kernels/cpu/optim.c)
  fdm.adam_step_(p, grad, st.exp_avg, st.exp_avg_sq, {
    lr = g.lr, beta1 = g.betas[1], beta2 = g.betas[2], eps = g.eps,
    weight_decay = g.weight_decay, step = st.step, decoupled = decoupled,
    maximize = g.maximize, max_exp_avg_sq = g.amsgrad and st.max_exp_avg_sq or nil })
end

-- the group's update with its lr and step in device tensors (graphs): the
-- step is counted on the device, then the kernel reads both there; the host's
-- st.step is brought up to date by Optimizer:sync_device_scalars()
local function adam_update_group_at(items, g, decoupled, dev)
  if #items ~= #g.params then
    error(string.format("optimizer step: with device scalars (graphs) every parameter of a group needs a " ..
      "gradient at every step (%d of %d have one)", #items, #g.params), 0)
  end
  local ps, gs, ms, vs, xs = {}, {}, {}, {}, {}
  for k, it in ipairs(items) do
    local p, st = it[1], it[3]
    init_adam_state(p, g, st)
    ps[k], gs[k], ms[k], vs[k] = p, it[2], st.exp_avg, st.exp_avg_sq
    if g.amsgrad then xs[k] = st.max_exp_avg_sq end
  end
  if not fdm.graph_capturing() then dev.lr:fill_(g.lr) end   -- a replay gets it from write_device_scalars
  fdm.counter_add_(dev.step, 1)
  fdm.adam_multi_step_(ps, gs, ms, vs, g.amsgrad and xs or nil, {
    lr_tensor = dev.lr, step_tensor = dev.step, beta1 = g.betas[1], beta2 = g.betas[2], eps = g.eps,
    weight_decay = g.weight_decay, decoupled = decoupled, maximize = g.maximize })
end

-- the whole group at once: parameters with the same device and step count
-- take one multi-tensor call (runtime/ops/op_optim.c, the adam_multi kernel),
-- with exactly adam_step_'s arithmetic on each
local function adam_update_group(items, g, decoupled, dev)
  if dev then return adam_update_group_at(items, g, decoupled, dev) end
  local batches, order = {}, {}
  for _, it in ipairs(items) do
    local p, grad, st = it[1], it[2], it[3]
    init_adam_state(p, g, st)
    st.step = st.step + 1
    local key = p.device .. ":" .. st.step
    local b = batches[key]
    if not b then
      b = { p = {}, g = {}, m = {}, v = {}, x = {}, step = st.step }
      batches[key] = b
      order[#order + 1] = key
    end
    local k = #b.p + 1
    b.p[k], b.g[k], b.m[k], b.v[k] = p, grad, st.exp_avg, st.exp_avg_sq
    if g.amsgrad then b.x[k] = st.max_exp_avg_sq end
  end
  for _, key in ipairs(order) do
    local b = batches[key]
    fdm.adam_multi_step_(b.p, b.g, b.m, b.v, g.amsgrad and b.x or nil, {
      lr = g.lr, beta1 = g.betas[1], beta2 = g.betas[2], eps = g.eps,
      weight_decay = g.weight_decay, step = b.step, decoupled = decoupled, maximize = g.maximize })
  end
end

local Adam = setmetatable({}, { __index = Optimizer })
Adam.__index = Adam
optim.Adam = Adam
-- opts: lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0 (L2,
-- added to the gradient), amsgrad = false, maximize = false
function Adam.new(params, opts)
  return Optimizer.new(Adam, "Adam", params, adam_defaults("Adam", opts, 0))
end
setmetatable(Adam, { __index = Optimizer, __call = function(_, ...) return Adam.new(...) end })
function Adam:update(p, grad, g, st) adam_update(p, grad, g, st, false) end
function Adam:update_group(items, g) adam_update_group(items, g, false, self._device_scalars[g]) end

local AdamW = setmetatable({}, { __index = Optimizer })
AdamW.__index = AdamW
optim.AdamW = AdamW
-- as Adam, with decoupled weight decay (default 1e-2): p *= 1 - lr*weight_decay
function AdamW.new(params, opts)
  return Optimizer.new(AdamW, "AdamW", params, adam_defaults("AdamW", opts, 1e-2))
end
setmetatable(AdamW, { __index = Optimizer, __call = function(_, ...) return AdamW.new(...) end })
function AdamW:update(p, grad, g, st) adam_update(p, grad, g, st, true) end
function AdamW:update_group(items, g) adam_update_group(items, g, true, self._device_scalars[g]) end

---------------------------------------------------------------------------
-- learning-rate schedulers (torch.optim.lr_scheduler, chainable forms)
---------------------------------------------------------------------------

local lr_scheduler = {}
optim.lr_scheduler = lr_scheduler

local LRScheduler = {}
LRScheduler.__index = LRScheduler
lr_scheduler.LRScheduler = LRScheduler

local function scheduler_class(name, ctor)
  local C = setmetatable({ __name = name }, { __index = LRScheduler,
    __call = function(cls, ...) return cls.new(...) end })
  C.__index = C
  C.new = function(opt, ...)
    local self = setmetatable({ optimizer = opt, last_epoch = -1, _step_count = 0 }, C)
    ctor(self, ...)
    for _, g in ipairs(opt.param_groups) do
      if g.initial_lr == nil then g.initial_lr = g.lr end
    end
    self.base_lrs = {}
    for i, g in ipairs(opt.param_groups) do self.base_lrs[i] = g.initial_lr end
    self:step()
    return self
  end
  lr_scheduler[name] = C
  optim[name] = C
  return C
end

-- advances one epoch/iteration and sets each group's lr
function LRScheduler:step()
  self._step_count = self._step_count + 1
  self.last_epoch = self.last_epoch + 1
  local lrs = self:get_lr()
  self._last_lr = {}
  for i, g in ipairs(self.optimizer.param_groups) do
    g.lr = lrs[i]
    self._last_lr[i] = lrs[i]
  end
end

-- the lrs set by the last step(), one per parameter group
function LRScheduler:get_last_lr()
  local out = {}
  for i, v in ipairs(self._last_lr) do out[i] = v end
  return out
end

local function group_lrs(self, f)
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = f(g.lr, self.base_lrs[i], i) end
  return out
end

-- numbers only (no functions, no optimizer)
function LRScheduler:state_dict()
  local sd = {}
  for k, v in pairs(self) do
    if k ~= "optimizer" and type(v) ~= "function" then
      sd[k] = type(v) == "table" and copy_table(v) or v
    end
  end
  return sd
end

function LRScheduler:load_state_dict(sd)
  for k, v in pairs(sd) do
    if k ~= "optimizer" then self[k] = type(v) == "table" and copy_table(v) or v end
  end
end

-- ExponentialLR(opt, gamma): lr *= gamma every step
local ExponentialLR = scheduler_class("ExponentialLR", function(self, gamma)
  assert(type(gamma) == "number", "ExponentialLR: gamma expected")
  self.gamma = gamma
end)
function ExponentialLR:get_lr()
  if self.last_epoch == 0 then return group_lrs(self, function(lr) return lr end) end
  return group_lrs(self, function(lr) return lr * self.gamma end)
end

-- StepLR(opt, step_size, gamma = 0.1): lr *= gamma every step_size steps
local StepLR = scheduler_class("StepLR", function(self, step_size, gamma)
  assert(type(step_size) == "number" and step_size >= 1, "StepLR: step_size expected")
  self.step_size, self.gamma = step_size, gamma or 0.1
end)
function StepLR:get_lr()
  if self.last_epoch == 0 or self.last_epoch % self.step_size ~= 0 then
    return group_lrs(self, function(lr) return lr end)
  end
  return group_lrs(self, function(lr) return lr * self.gamma end)
end

-- CosineAnnealingLR(opt, T_max, eta_min = 0):
-- lr = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2
local CosineAnnealingLR = scheduler_class("CosineAnnealingLR", function(self, T_max, eta_min)
  assert(type(T_max) == "number" and T_max > 0, "CosineAnnealingLR: T_max expected")
  self.T_max, self.eta_min = T_max, eta_min or 0
end)
function CosineAnnealingLR:get_lr()
  local e, T, emin = self.last_epoch, self.T_max, self.eta_min
  if e == 0 then
    return group_lrs(self, function(lr) return lr end)
  elseif self._step_count == 1 and e > 0 then
    return group_lrs(self, function(_, base)
      return emin + (base - emin) * (1 + math.cos(e * math.pi / T)) / 2
    end)
  elseif (e - 1 - T) % (2 * T) == 0 then
    return group_lrs(self, function(lr, base)
      return lr + (base - emin) * (1 - math.cos(math.pi / T)) / 2
    end)
  end
  return group_lrs(self, function(lr)
    return (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - emin) + emin
  end)
end

-- LambdaLR(opt, fn): lr = base_lr * fn(step) (fn may be a list, one per group)
local LambdaLR = scheduler_class("LambdaLR", function(self, fn)
  assert(type(fn) == "function" or type(fn) == "table", "LambdaLR: a function expected")
  self.lr_lambda = fn
end)
function LambdaLR:get_lr()
  return group_lrs(self, function(_, base, i)
    local f = type(self.lr_lambda) == "table" and self.lr_lambda[i] or self.lr_lambda
    return base * f(self.last_epoch)
  end)
end
function LambdaLR:state_dict()
  local sd = LRScheduler.state_dict(self)
  sd.lr_lambda = nil
  return sd
end

-- LinearLR(opt, {start_factor = 1/3, end_factor = 1, total_iters = 5})
local LinearLR = scheduler_class("LinearLR", function(self, opts)
  opts = opts or {}
  self.start_factor = opts.start_factor or 1 / 3
  self.end_factor = opts.end_factor or 1
  self.total_iters = opts.total_iters or 5
  assert(self.start_factor > 0 and self.start_factor <= 1, "LinearLR: start_factor must be in (0, 1]")
end)
function LinearLR:get_lr()
  local e, s, f, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
  if e == 0 then return group_lrs(self, function(lr) return lr * s end) end
  if e > n then return group_lrs(self, function(lr) return lr end) end
  return group_lrs(self, function(lr)
    return lr * (1 + (f - s) / (n * s + (e - 1) * (f - s)))
  end)
end

-- factor for a linear warmup: (step + 1) / warmup_steps, then 1
function lr_scheduler.warmup_lambda(warmup_steps)
  return function(step) return math.min(1, (step + 1) / warmup_steps) end
end

-- LinearWarmup(opt, warmup_steps): lr = base * min(1, (step + 1) / warmup_steps)
local LinearWarmup = scheduler_class("LinearWarmup", function(self, warmup_steps)
  assert(type(warmup_steps) == "number" and warmup_steps >= 1, "LinearWarmup: warmup_steps expected")
  self.warmup_steps = warmup_steps
end)
function LinearWarmup:get_lr()
  local f = math.min(1, (self.last_epoch + 1) / self.warmup_steps)
  return group_lrs(self, function(_, base) return base * f end)
end

-- WarmupCosine(opt, warmup_steps, total_steps, eta_min = 0): linear warmup,
-- then a cosine decay from base to eta_min reached at total_steps
local WarmupCosine = scheduler_class("WarmupCosine", function(self, warmup_steps, total_steps, eta_min)
  assert(type(warmup_steps) == "number" and type(total_steps) == "number" and total_steps > warmup_steps,
    "WarmupCosine: warmup_steps < total_steps expected")
  self.warmup_steps, self.total_steps, self.eta_min = warmup_steps, total_steps, eta_min or 0
end)
function WarmupCosine:get_lr()
  local e, w, T, emin = self.last_epoch, self.warmup_steps, self.total_steps, self.eta_min
  return group_lrs(self, function(_, base)
    if e < w then return base * (e + 1) / w end
    local t = math.min(1, (e - w) / (T - w))
    return emin + (base - emin) * (1 + math.cos(math.pi * t)) / 2
  end)
end

---------------------------------------------------------------------------
-- gradient clipping
---------------------------------------------------------------------------

local function grads_of(params)
  local list = param_list(params)
  local out = {}
  for _, p in ipairs(list) do
    local g = p.grad
    if g ~= nil then out[#out + 1] = g end
  end
  return out
end

-- Scales the gradients so that their total norm is at most max_norm (as
-- torch.nn.utils.clip_grad_norm_); returns the total norm before clipping.
-- norm_type: 2 (default) or math.huge.
function optim.clip_grad_norm_(params, max_norm, norm_type)
  norm_type = norm_type or 2
  local grads = grads_of(params)
  if #grads == 0 then return 0 end
  local total
  if norm_type == math.huge then
    total = 0
    for _, g in ipairs(grads) do total = math.max(total, g:abs():max():item()) end
  else
    local acc = 0
    for _, g in ipairs(grads) do
      local n
      if norm_type == 2 then n = g:norm():item()
      else n = fdm.pow(g:abs(), norm_type):sum():item() ^ (1 / norm_type) end
      acc = acc + n ^ norm_type
    end
    total = acc ^ (1 / norm_type)
  end
  local coef = max_norm / (total + 1e-6)
  if coef < 1 then
    no_grad(function() for _, g in ipairs(grads) do g:mul_(coef) end end)
  end
  return total
end

-- clamps every gradient to [-clip_value, clip_value]
function optim.clip_grad_value_(params, clip_value)
  no_grad(function()
    for _, g in ipairs(grads_of(params)) do g:clamp_(-clip_value, clip_value) end
  end)
end

---------------------------------------------------------------------------
-- EMA of a model's weights
---------------------------------------------------------------------------

local EMA = {}
EMA.__index = EMA
optim.EMA = EMA

-- EMA(model, decay = 0.999, {warmup = false}): shadow copies of the model's
-- state (parameters averaged, buffers copied). With warmup the decay used is
-- min(decay, (1 + n) / (10 + n)) after n updates.
function EMA.new(model, decay, opts)
  if type(decay) == "table" then opts, decay = decay, decay.decay end
  opts = opts or {}
  local self = setmetatable({ decay = decay or 0.999, warmup = opts.warmup or false,
    num_updates = 0, shadow = {}, keys = {}, is_param = {} }, EMA)
  local sd, keys = model:state_dict()
  for _, e in ipairs(model:named_parameters()) do self.is_param[e[1]] = true end
  self.keys = keys
  no_grad(function()
    for _, k in ipairs(keys) do self.shadow[k] = sd[k]:clone() end
  end)
  return self
end
setmetatable(EMA, { __call = function(_, ...) return EMA.new(...) end })

function EMA:current_decay()
  if self.warmup then
    local n = self.num_updates
    return math.min(self.decay, (1 + n) / (10 + n))
  end
  return self.decay
end

-- shadow = decay * shadow + (1 - decay) * param; buffers copied
function EMA:update(model)
  local d = self:current_decay()
  local sd = model:state_dict()
  no_grad(function()
    for _, k in ipairs(self.keys) do
      local s, v = self.shadow[k], sd[k]
      assert(v ~= nil, "EMA:update: the model has no '" .. k .. "'")
      if self.is_param[k] then
        s:mul_(d)
        s:add_(v, 1 - d)
      else
        s:copy_(v)
      end
    end
  end)
  self.num_updates = self.num_updates + 1
end

-- copies the averaged weights into the model
function EMA:copy_to(model)
  model:load_state_dict(self.shadow, { strict = false })
end

-- saves the model's current weights, to put back with restore(model)
function EMA:store(model)
  local sd = model:state_dict()
  self.backup = {}
  no_grad(function()
    for _, k in ipairs(self.keys) do self.backup[k] = sd[k]:clone() end
  end)
end

function EMA:restore(model)
  assert(self.backup, "EMA:restore: nothing stored")
  model:load_state_dict(self.backup, { strict = false })
  self.backup = nil
end

-- name -> tensor with the model's state_dict names (loadable into the model),
-- and the ordered names
function EMA:state_dict()
  return self.shadow, self.keys
end

function EMA:load_state_dict(sd)
  no_grad(function()
    for _, k in ipairs(self.keys) do
      assert(sd[k] ~= nil, "EMA:load_state_dict: missing '" .. k .. "'")
      self.shadow[k]:copy_(sd[k])
    end
  end)
end

return optim
