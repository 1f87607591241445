-- fdm.nn: modules (layers) with parameters, buffers and children, in the
-- manner of torch.nn. Parameter names, state_dict order and default
-- initialisation follow PyTorch 1.13, so weights move between the two by name.
--
--   local nn = fdm.nn
--   local net = nn.Sequential(nn.Conv2d(1, 64, 3, {padding = 1}), nn.ReLU())
--   local y = net(x)
--
-- User modules:
--   local Net = nn.Module:extend("Net")
--   function Net:init(c) self.conv = nn.Conv2d(c, c, 3, {padding = 1}) end
--   function Net:forward(x) return fdm.F.relu(self.conv(x)) end
--
-- Dims follow fdm's Lua convention (1-based; negative from the end), e.g.
-- Flatten() flattens dims 2..-1 like torch.nn.Flatten().

local fdm = require "fdm"   -- init.lua registers itself before loading this file

local nn = {}

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

local function is_tensor(v)
  return type(v) == "userdata"
end

local function no_grad(f)
  return fdm.no_grad(f)
end

-- Python-style float repr: 1e-05, 0.1, 2.0
local function pyfloat(x)
  if x == math.huge then return "inf" elseif x == -math.huge then return "-inf"
  elseif x ~= x then return "nan" end
  local s
  for p = 1, 17 do
    s = string.format("%." .. p .. "g", x)
    if tonumber(s) == x then break end
  end
  local mant, exp = s:match("^(-?[%d%.]+)e([-+]%d+)$")
  local e = exp and tonumber(exp)
  if not e then
    -- %g may still pick fixed notation; Python switches to exponent when
    -- exp < -4 or exp >= 16
    if not s:find("[%.e]") then s = s .. ".0" end
    return s
  end
  if e >= -4 and e < 16 then
    -- Python would print fixed notation
    local digits = #mant:gsub("[-%.]", "")
    local dec = math.max(0, digits - 1 - e)
    s = string.format("%." .. dec .. "f", x)
    if not s:find("%.") then s = s .. ".0" end
    return s
  end
  return string.format("%se%s%02d", mant, e < 0 and "-" or "+", math.abs(e))
end
nn._pyfloat = pyfloat

local function pybool(b) return b and "True" or "False" end

local function pair(v, name)
  if type(v) == "table" then
    assert(#v == 2, (name or "argument") .. " must be a number or a {h, w} pair")
    return { v[1], v[2] }
  end
  assert(type(v) == "number", (name or "argument") .. " must be a number or a {h, w} pair")
  return { v, v }
end

local function tuplestr(t)
  if type(t) ~= "table" then return tostring(t) end
  if #t == 1 then return "(" .. tostring(t[1]) .. ",)" end
  local parts = {}
  for i = 1, #t do parts[i] = tostring(t[i]) end
  return "(" .. table.concat(parts, ", ") .. ")"
end

local function shapestr(t)
  return "[" .. table.concat(t.shape, ", ") .. "]"
end

-- marks tensors created through nn.Parameter so assignment registers them
local param_marks = setmetatable({}, { __mode = "k" })

function nn.Parameter(t, requires_grad)
  assert(is_tensor(t), "nn.Parameter: tensor expected")
  if requires_grad ~= false and not t.requires_grad then t:requires_grad_() end
  param_marks[t] = true
  return t
end

---------------------------------------------------------------------------
-- init (torch.nn.init)
---------------------------------------------------------------------------

local init = {}
nn.init = init

function init.calculate_fan_in_and_fan_out(t)
  local shape = t.shape
  assert(#shape >= 2, "init: fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
  local rf = 1
  for i = 3, #shape do rf = rf * shape[i] end
  return shape[2] * rf, shape[1] * rf
end

function init.calculate_gain(nonlinearity, param)
  if nonlinearity == "relu" then return math.sqrt(2)
  elseif nonlinearity == "tanh" then return 5 / 3
  elseif nonlinearity == "selu" then return 3 / 4
  elseif nonlinearity == "leaky_relu" then
    local slope = param or 0.01
    return math.sqrt(2 / (1 + slope * slope))
  end
  return 1
end

local function assign_(t, src)
  no_grad(function() t:copy_(src) end)
  return t
end

function init.uniform_(t, a, b)
  a, b = a or 0, b or 1
  local r = fdm.rand(t.shape, { device = t.device })
  r:mul_(b - a)
  r:add_(a)
  return assign_(t, r)
end

function init.normal_(t, mean, std)
  mean, std = mean or 0, std or 1
  local r = fdm.randn(t.shape, { device = t.device })
  r:mul_(std)
  r:add_(mean)
  return assign_(t, r)
end

function init.constant_(t, v) no_grad(function() t:fill_(v) end); return t end
function init.zeros_(t) return init.constant_(t, 0) end
function init.ones_(t) return init.constant_(t, 1) end

local function fan(t, mode)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  return (mode == "fan_out") and fo or fi
end

function init.kaiming_uniform_(t, a, mode, nonlinearity)
  a = a or 0
  local gain = init.calculate_gain(nonlinearity or "leaky_relu", a)
  local std = gain / math.sqrt(fan(t, mode))
  local bound = math.sqrt(3) * std
  return init.uniform_(t, -bound, bound)
end

function init.kaiming_normal_(t, a, mode, nonlinearity)
  a = a or 0
  local gain = init.calculate_gain(nonlinearity or "leaky_relu", a)
  return init.normal_(t, 0, gain / math.sqrt(fan(t, mode)))
end

function init.xavier_uniform_(t, gain)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  local a = (gain or 1) * math.sqrt(6 / (fi + fo))
  return init.uniform_(t, -a, a)
end

function init.xavier_normal_(t, gain)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  return init.normal_(t, 0, (gain or 1) * math.sqrt(2 / (fi + fo)))
end

-- a new parameter of the given shape drawn from U(-bound, bound)
local function uniform_param(shape, bound)
  local r = fdm.rand(shape)
  r:mul_(2 * bound)
  r:sub_(bound)
  return r:requires_grad_()
end

---------------------------------------------------------------------------
-- class system
---------------------------------------------------------------------------

local Module = {}
nn.Module = Module

local function is_module(v)
  return type(v) == "table" and rawget(v, "_parameters") ~= nil
end
nn.is_module = is_module

local function child_key(k)
  if math.type(k) == "integer" then return string.format("%d", k - 1) end
  return k
end

local function make_index(C)
  return function(self, k)
    local v = C[k]
    if v ~= nil then return v end
    v = rawget(self, "_parameters")[k]
    if v ~= nil then return v end
    v = rawget(self, "_buffers")[k]
    if v ~= nil then return v end
    return rawget(self, "_modules")[child_key(k)]
  end
end

local function module_newindex(self, k, v)
  local params, buffers, modules = rawget(self, "_parameters"), rawget(self, "_buffers"), rawget(self, "_modules")
  if is_module(v) then
    params[k] = nil; buffers[k] = nil
    self:add_module(k, v)
  elseif rawget(self, "_param_set")[k] then
    if v ~= nil and not is_tensor(v) then
      error(string.format("cannot assign '%s' as parameter '%s' (tensor or nil expected)", type(v), k), 2)
    end
    params[k] = v
  elseif rawget(self, "_buffer_set")[k] then
    if v ~= nil and not is_tensor(v) then
      error(string.format("cannot assign '%s' as buffer '%s' (tensor or nil expected)", type(v), k), 2)
    end
    buffers[k] = v
  elseif rawget(self, "_module_set")[child_key(k)] then
    if v ~= nil then
      error(string.format("cannot assign '%s' as child module '%s' (module or nil expected)", type(v), k), 2)
    end
    modules[child_key(k)] = nil
  elseif is_tensor(v) and param_marks[v] then
    self:register_parameter(k, v)
  else
    rawset(self, k, v)
  end
end

local function class(name, parent)
  local C = { __name = name, super = parent }
  C._mt = {
    __name = name,
    __index = make_index(C),
    __newindex = module_newindex,
    __call = function(self, ...) return self:forward(...) end,
    __tostring = function(self) return self:repr() end,
    __len = function(self) return #rawget(self, "_module_names") end,
  }
  return setmetatable(C, {
    __index = parent,
    __call = function(cls, ...) return cls:new(...) end,
    __tostring = function() return "class " .. name end,
  })
end
nn.class = class


-- creates an instance and runs cls.init(self, ...)
function Module:new(...)
  local self = setmetatable({
    training = true,
    _parameters = {}, _param_names = {}, _param_set = {},
    _buffers = {}, _buffer_names = {}, _buffer_set = {}, _non_persistent = {},
    _modules = {}, _module_names = {}, _module_set = {},
  }, self._mt)
  self:init(...)
  return self
end

Module.__name = "Module"
setmetatable(Module, { __call = function(cls, ...) return cls:new(...) end })
Module._mt = {
  __name = "Module",
  __index = make_index(Module),
  __newindex = module_newindex,
  __call = function(self, ...) return self:forward(...) end,
  __tostring = function(self) return self:repr() end,
  __len = function(self) return #rawget(self, "_module_names") end,
}

function Module:init() end

function Module:forward()
  error(self.__name .. ": forward is not implemented", 2)
end

-- registration -----------------------------------------------------------

function Module:register_parameter(name, t)
  assert(type(name) == "string", "register_parameter: name must be a string")
  assert(t == nil or is_tensor(t), "register_parameter: tensor or nil expected for '" .. name .. "'")
  if not self._param_set[name] then
    self._param_set[name] = true
    table.insert(self._param_names, name)
  end
  if t ~= nil and not t.requires_grad and param_marks[t] == nil then t:requires_grad_() end
  self._parameters[name] = t
  return t
end

function Module:register_buffer(name, t, persistent)
  assert(type(name) == "string", "register_buffer: name must be a string")
  assert(t == nil or is_tensor(t), "register_buffer: tensor or nil expected for '" .. name .. "'")
  if not self._buffer_set[name] then
    self._buffer_set[name] = true
    table.insert(self._buffer_names, name)
  end
  self._buffers[name] = t
  self._non_persistent[name] = (persistent == false) or nil
  return t
end

function Module:add_module(name, m)
  name = child_key(name)
  assert(type(name) == "string", "add_module: name must be a string")
  assert(m == nil or is_module(m), "add_module: module expected for '" .. name .. "'")
  if not self._module_set[name] then
    self._module_set[name] = true
    table.insert(self._module_names, name)
  end
  self._modules[name] = m
  return m
end
Module.register_module = Module.add_module

-- traversal --------------------------------------------------------------

function Module:named_children()
  local out = {}
  for _, n in ipairs(self._module_names) do
    local m = self._modules[n]
    if m then out[#out + 1] = { n, m } end
  end
  return out
end

function Module:children()
  local out = {}
  for _, e in ipairs(self:named_children()) do out[#out + 1] = e[2] end
  return out
end

-- list of {name, module}, self first (name ""), depth first, no duplicates
function Module:named_modules(prefix, memo, out)
  prefix, memo, out = prefix or "", memo or {}, out or {}
  if memo[self] then return out end
  memo[self] = true
  out[#out + 1] = { prefix, self }
  for _, n in ipairs(self._module_names) do
    local m = self._modules[n]
    if m then m:named_modules(prefix == "" and n or (prefix .. "." .. n), memo, out) end
  end
  return out
end

function Module:modules()
  local out = {}
  for _, e in ipairs(self:named_modules()) do out[#out + 1] = e[2] end
  return out
end

local function named_members(self, names_field, store_field, recurse, skip)
  local out, seen = {}, {}
  local mods = recurse == false and { { "", self } } or self:named_modules()
  for _, e in ipairs(mods) do
    local prefix, m = e[1], e[2]
    local store = m[store_field]
    for _, n in ipairs(m[names_field]) do
      local t = store[n]
      if t ~= nil and not seen[t] and not (skip and skip(m, n)) then
        seen[t] = true
        out[#out + 1] = { prefix == "" and n or (prefix .. "." .. n), t }
      end
    end
  end
  return out
end

-- ordered list of {name, tensor} with PyTorch's names ("0.weight", ...)
function Module:named_parameters(recurse)
  return named_members(self, "_param_names", "_parameters", recurse)
end

function Module:parameters(recurse)
  local out = {}
  for i, e in ipairs(self:named_parameters(recurse)) do out[i] = e[2] end
  return out
end

function Module:named_buffers(recurse)
  return named_members(self, "_buffer_names", "_buffers", recurse)
end

function Module:buffers(recurse)
  local out = {}
  for i, e in ipairs(self:named_buffers(recurse)) do out[i] = e[2] end
  return out
end

function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

function Module:num_parameters(only_trainable)
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not only_trainable or p.requires_grad then n = n + p:numel() end
  end
  return n
end

-- modes ------------------------------------------------------------------

function Module:train(mode)
  if mode == nil then mode = true end
  rawset(self, "training", mode and true or false)
  for _, c in ipairs(self:children()) do c:train(mode) end
  return self
end

function Module:eval() return self:train(false) end

function Module:requires_grad_(flag)
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p:requires_grad_(flag) end
  return self
end

function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
end

-- moves (or converts) every parameter and buffer; a dtype conversion
-- touches floating-point tensors only (float16/bfloat16 parameters do not
-- require grad: the core allows that for float32 only). Gradients are dropped.
local devices = { cpu = true, cuda = true }
function Module:to(target)
  assert(type(target) == "string", "Module:to: a device or dtype name expected")
  local is_device = devices[target] or target:match("^cuda") ~= nil
  -- wants_grad: a parameter that required grad (remembered across a
  -- half-precision round trip, where the core does not allow it)
  local function conv(t, wants_grad)
    if is_device then
      if t.device == target then return t end
    else
      local dt = t.dtype
      if dt ~= "float32" and dt ~= "float16" and dt ~= "bfloat16" then return t end
      if dt == target then return t end
    end
    local n = no_grad(function() return t:to(target) end)
    if wants_grad then
      n = n:detach()
      if n.dtype == "float32" then n:requires_grad_() end
    end
    return n
  end
  for _, m in ipairs(self:modules()) do
    local wants = rawget(m, "_wants_grad") or {}
    rawset(m, "_wants_grad", wants)
    for _, name in ipairs(m._param_names) do
      local p = m._parameters[name]
      if p ~= nil then
        local w = p.requires_grad or (wants[name] and p.dtype ~= "float32")
        m._parameters[name] = conv(p, w)
        wants[name] = w or nil
      end
    end
    for _, name in ipairs(m._buffer_names) do
      local b = m._buffers[name]
      if b ~= nil then m._buffers[name] = conv(b, false) end
    end
  end
  return self
end
function Module:cpu() return self:to("cpu") end
function Module:cuda() return self:to("cuda") end

-- state dict -------------------------------------------------------------

-- name -> tensor (detached views of the parameters and buffers), and the
-- ordered list of names as a second value (PyTorch's order: a module's own
-- parameters, then its buffers, then its children, recursively).
function Module:state_dict(prefix, sd, keys)
  prefix, sd, keys = prefix or "", sd or {}, keys or {}
  for _, n in ipairs(self._param_names) do
    local p = self._parameters[n]
    if p ~= nil then
      sd[prefix .. n] = p:detach(); keys[#keys + 1] = prefix .. n
    end
  end
  for _, n in ipairs(self._buffer_names) do
    local b = self._buffers[n]
    if b ~= nil and not self._non_persistent[n] then
      sd[prefix .. n] = b:detach(); keys[#keys + 1] = prefix .. n
    end
  end
  for _, n in ipairs(self._module_names) do
    local m = self._modules[n]
    if m then m:state_dict(prefix .. n .. ".", sd, keys) end
  end
  return sd, keys
end

function Module:state_dict_keys()
  local _, keys = self:state_dict()
  return keys
end

local function quoted_list(list)
  local q = {}
  for i, k in ipairs(list) do q[i] = '"' .. k .. '"' end
  return table.concat(q, ", ")
end

-- Copies sd's tensors into the parameters and buffers. opts.strict (default
-- true): missing or unexpected keys are errors. Shape mismatches are always
-- errors. Returns {missing_keys = {...}, unexpected_keys = {...}}.
function Module:load_state_dict(sd, opts)
  assert(type(sd) == "table", "load_state_dict: a table name -> tensor expected")
  local strict = true
  if opts ~= nil and opts.strict ~= nil then strict = opts.strict end
  -- collect destinations: name -> {module, kind, field}
  local dest, order = {}, {}
  local function walk(m, prefix)
    for _, n in ipairs(m._param_names) do
      if m._parameters[n] ~= nil then
        dest[prefix .. n] = { m, "_parameters", n }; order[#order + 1] = prefix .. n
      end
    end
    for _, n in ipairs(m._buffer_names) do
      if m._buffers[n] ~= nil and not m._non_persistent[n] then
        dest[prefix .. n] = { m, "_buffers", n }; order[#order + 1] = prefix .. n
      end
    end
    for _, n in ipairs(m._module_names) do
      local c = m._modules[n]
      if c then walk(c, prefix .. n .. ".") end
    end
  end
  walk(self, "")
  local missing, unexpected, errs = {}, {}, {}
  for _, k in ipairs(order) do
    local src = sd[k]
    if src == nil then
      missing[#missing + 1] = k
    elseif not is_tensor(src) then
      errs[#errs + 1] = string.format('While copying the parameter named "%s", expected a tensor, got %s.', k, type(src))
    else
      local d = dest[k]
      local cur = d[1][d[2]][d[3]]
      local a, b = src.shape, cur.shape
      local same = #a == #b
      if same then for i = 1, #a do if a[i] ~= b[i] then same = false end end end
      if not same then
        errs[#errs + 1] = string.format(
          "size mismatch for %s: copying a param with shape %s from checkpoint, the shape in current model is %s.",
          k, shapestr(src), shapestr(cur))
      end
    end
  end
  for k, _ in pairs(sd) do
    if type(k) ~= "string" or dest[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  local msgs = {}
  if strict then
    if #unexpected > 0 then
      msgs[#msgs + 1] = "Unexpected key(s) in state_dict: " .. quoted_list(unexpected) .. "."
    end
    if #missing > 0 then
      msgs[#msgs + 1] = "Missing key(s) in state_dict: " .. quoted_list(missing) .. "."
    end
  end
  for _, e in ipairs(errs) do msgs[#msgs + 1] = e end
  if #msgs > 0 then
    error("Error(s) in loading state_dict for " .. self.__name .. ":\n\t" .. table.concat(msgs, "\n\t"), 2)
  end
  no_grad(function()
    for _, k in ipairs(order) do
      local src = sd[k]
      if src ~= nil then
        local d = dest[k]
        d[1][d[2]][d[3]]:copy_(src)
      end
    end
  end)
  return { missing_keys = missing, unexpected_keys = unexpected }
end

-- repr -------------------------------------------------------------------

function Module:extra_repr() return "" end

local function addindent(s, n)
  return (s:gsub("\n", "\n" .. string.rep(" ", n)))
end

function Module:repr()
  local lines = {}
  local extra = self:extra_repr()
  if extra and extra ~= "" then
    for line in (extra .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  end
  for _, e in ipairs(self:named_children()) do
    lines[#lines + 1] = "(" .. e[1] .. "): " .. addindent(e[2]:repr(), 2)
  end
  local s = self.__name .. "("
  if #lines > 0 then
    if #lines == 1 and #self._module_names == 0 then
      s = s .. lines[1]
    else
      s = s .. "\n  " .. table.concat(lines, "\n  ") .. "\n"
    end
  end
  return s .. ")"
end

-- define a class and remember the class on its instances
local function define(name, parent)
  local C = class(name, parent or Module)
  C.__class = C
  nn[name] = C
  return C
end
Module.__class = Module

function Module:is_a(cls)
  local k = self.__class
  while k do
    if k == cls then return true end
    k = rawget(k, "super")
  end
  return false
end

-- make user classes made with extend() know themselves too
function Module:extend(name)
  local C = class(name or "Module", self)
  C.__class = C
  return C
end

---------------------------------------------------------------------------
-- layers
---------------------------------------------------------------------------

local function opt(o, k, def)
  if o == nil then return def end
  local v = o[k]
  if v == nil then return def end
  return v
end

-- Linear ----------------------------------------------------------------
local Linear = define("Linear")
function Linear:init(in_features, out_features, opts)
  if type(opts) == "boolean" then opts = { bias = opts } end
  self.in_features, self.out_features = in_features, out_features
  local bound = in_features > 0 and 1 / math.sqrt(in_features) or 0
  self:register_parameter("weight", uniform_param({ out_features, in_features }, bound))
  if opt(opts, "bias", true) then
    self:register_parameter("bias", uniform_param({ out_features }, bound))
  end
end
function Linear:forward(x)
  return fdm.F.linear(x, self.weight, self.bias)
end
function Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s",
    self.in_features, self.out_features, pybool(self.bias ~= nil))
end

-- Conv2d / ConvTranspose2d -----------------------------------------------
local function conv_common(self, in_channels, out_channels, kernel_size, opts, transposed)
  local groups = opt(opts, "groups", 1)
  assert(in_channels % groups == 0, "Conv: in_channels must be divisible by groups")
  assert(out_channels % groups == 0, "Conv: out_channels must be divisible by groups")
  self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
  self.kernel_size = pair(kernel_size, "kernel_size")
  self.stride = pair(opt(opts, "stride", 1), "stride")
  self.dilation = pair(opt(opts, "dilation", 1), "dilation")
  local padding = opt(opts, "padding", 0)
  if padding == "valid" then padding = 0 end
  if padding == "same" then
    assert(not transposed, "ConvTranspose2d: padding='same' is not supported")
    assert(self.stride[1] == 1 and self.stride[2] == 1, "Conv2d: padding='same' needs stride 1")
    local p = {}
    for i = 1, 2 do
      local total = self.dilation[i] * (self.kernel_size[i] - 1)
      assert(total % 2 == 0, "Conv2d: padding='same' needs an odd effective kernel size")
      p[i] = total // 2
    end
    padding = p
  end
  self.padding = pair(padding, "padding")
  self.output_padding = pair(opt(opts, "output_padding", 0), "output_padding")
  self.transposed = transposed
  local kh, kw = self.kernel_size[1], self.kernel_size[2]
  local shape
  if transposed then
    shape = { in_channels, out_channels // groups, kh, kw }
  else
    shape = { out_channels, in_channels // groups, kh, kw }
  end
  local fan_in = shape[2] * kh * kw -- torch's _calculate_fan_in_and_fan_out
  local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
  self:register_parameter("weight", uniform_param(shape, bound))
  if opt(opts, "bias", true) then
    self:register_parameter("bias", uniform_param({ out_channels }, bound))
  end
end

local function conv_repr(self)
  local s = string.format("%d, %d, kernel_size=%s, stride=%s", self.in_channels, self.out_channels,
    tuplestr(self.kernel_size), tuplestr(self.stride))
  if self.padding[1] ~= 0 or self.padding[2] ~= 0 then s = s .. ", padding=" .. tuplestr(self.padding) end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then s = s .. ", dilation=" .. tuplestr(self.dilation) end
  if self.output_padding[1] ~= 0 or self.output_padding[2] ~= 0 then
    s = s .. ", output_padding=" .. tuplestr(self.output_padding)
  end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if self.bias == nil then s = s .. ", bias=False" end
  return s
end

local Conv2d = define("Conv2d")
function Conv2d:init(in_channels, out_channels, kernel_size, opts)
  conv_common(self, in_channels, out_channels, kernel_size, opts, false)
end
function Conv2d:forward(x)
  return fdm.F.conv2d(x, self.weight, self.bias, {
    stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups })
end
Conv2d.extra_repr = conv_repr

local ConvTranspose2d = define("ConvTranspose2d")
function ConvTranspose2d:init(in_channels, out_channels, kernel_size, opts)
  conv_common(self, in_channels, out_channels, kernel_size, opts, true)
end
function ConvTranspose2d:forward(x)
  return fdm.F.conv_transpose2d(x, self.weight, self.bias, {
    stride = self.stride, padding = self.padding, output_padding = self.output_padding,
    groups = self.groups, dilation = self.dilation })
end
ConvTranspose2d.extra_repr = conv_repr

-- BatchNorm2d ------------------------------------------------------------
local BatchNorm2d = define("BatchNorm2d")
function BatchNorm2d:init(num_features, opts)
  self.num_features = num_features
  self.eps = opt(opts, "eps", 1e-5)
  self.momentum = opt(opts, "momentum", 0.1)
  if opts ~= nil and opts.momentum == false then self.momentum = nil end -- cumulative average
  self.affine = opt(opts, "affine", true)
  self.track_running_stats = opt(opts, "track_running_stats", true)
  if self.affine then
    self:register_parameter("weight", fdm.ones(num_features):requires_grad_())
    self:register_parameter("bias", fdm.zeros(num_features):requires_grad_())
  end
  if self.track_running_stats then
    self:register_buffer("running_mean", fdm.zeros(num_features))
    self:register_buffer("running_var", fdm.ones(num_features))
    self:register_buffer("num_batches_tracked", fdm.zeros({}, { dtype = "int64" }))
  end
end
function BatchNorm2d:reset_running_stats()
  if self.track_running_stats then
    self.running_mean:zero_(); self.running_var:fill_(1); self.num_batches_tracked:zero_()
  end
end
function BatchNorm2d:forward(x)
  local factor = self.momentum or 0.0
  if self.training and self.track_running_stats and self.num_batches_tracked ~= nil then
    no_grad(function() self.num_batches_tracked:add_(1) end)
    if self.momentum == nil then
      factor = 1.0 / self.num_batches_tracked:item()
    end
  end
  local bn_training = self.training or (self.running_mean == nil and self.running_var == nil)
  local use_stats = (not self.training) or self.track_running_stats
  return fdm.F.batch_norm(x,
    use_stats and self.running_mean or nil, use_stats and self.running_var or nil,
    self.weight, self.bias, bn_training, factor, self.eps)
end
function BatchNorm2d:extra_repr()
  return string.format("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s",
    self.num_features, pyfloat(self.eps), self.momentum and pyfloat(self.momentum) or "None",
    pybool(self.affine), pybool(self.track_running_stats))
end

-- GroupNorm --------------------------------------------------------------
local GroupNorm = define("GroupNorm")
function GroupNorm:init(num_groups, num_channels, opts)
  assert(num_channels % num_groups == 0, "GroupNorm: num_channels must be divisible by num_groups")
  self.num_groups, self.num_channels = num_groups, num_channels
  self.eps = opt(opts, "eps", 1e-5)
  self.affine = opt(opts, "affine", true)
  if self.affine then
    self:register_parameter("weight", fdm.ones(num_channels):requires_grad_())
    self:register_parameter("bias", fdm.zeros(num_channels):requires_grad_())
  end
end
function GroupNorm:forward(x)
  return fdm.F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
end
function GroupNorm:extra_repr()
  return string.format("%d, %d, eps=%s, affine=%s", self.num_groups, self.num_channels,
    pyfloat(self.eps), pybool(self.affine))
end

-- LayerNorm --------------------------------------------------------------
local LayerNorm = define("LayerNorm")
function LayerNorm:init(shape, opts)
  if type(shape) == "number" then shape = { shape } end
  self.normalized_shape = { table.unpack(shape) }
  self.eps = opt(opts, "eps", 1e-5)
  self.elementwise_affine = opt(opts, "elementwise_affine", true)
  if self.elementwise_affine then
    self:register_parameter("weight", fdm.ones(self.normalized_shape):requires_grad_())
    self:register_parameter("bias", fdm.zeros(self.normalized_shape):requires_grad_())
  end
end
function LayerNorm:forward(x)
  return fdm.F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
end
function LayerNorm:extra_repr()
  return string.format("%s, eps=%s, elementwise_affine=%s", tuplestr(self.normalized_shape),
    pyfloat(self.eps), pybool(self.elementwise_affine))
end

-- activations -----------------------------------------------------------
local GELU = define("GELU")
function GELU:init(approximate)
  if type(approximate) == "table" then approximate = approximate.approximate end
  self.approximate = approximate or "none"
  assert(self.approximate == "none" or self.approximate == "tanh",
    "GELU: approximate must be 'none' or 'tanh'")
end
function GELU:forward(x)
  if self.approximate == "tanh" then return fdm.F.gelu(x, "tanh") end
  return fdm.F.gelu(x)
end
function GELU:extra_repr() return "approximate='" .. self.approximate .. "'" end

for _, name in ipairs({ "SiLU", "ReLU", "Sigmoid", "Tanh" }) do
  local C = define(name)
  local fname = name:lower()
  C.forward = function(_, x) return fdm.F[fname](x) end
end

local Identity = define("Identity")
function Identity:forward(x) return x end

local Softmax = define("Softmax")
function Softmax:init(dim) self.dim = dim end
function Softmax:forward(x) return fdm.F.softmax(x, self.dim or -1) end
function Softmax:extra_repr() return "dim=" .. tostring(self.dim or "None") end

local Dropout = define("Dropout")
function Dropout:init(p)
  if type(p) == "table" then p = p.p end
  self.p = p or 0.5
  assert(self.p >= 0 and self.p <= 1, "Dropout: p must be in [0, 1]")
end
function Dropout:forward(x)
  if not self.training or self.p == 0 then return x end
  return fdm.F.dropout(x, self.p, true)
end
function Dropout:extra_repr() return "p=" .. pyfloat(self.p) .. ", inplace=False" end

-- pooling ---------------------------------------------------------------
local function pool_init(self, kernel_size, opts)
  if type(opts) == "number" then opts = { stride = opts } end
  self.kernel_size = kernel_size
  self.stride = opt(opts, "stride", kernel_size)
  self.padding = opt(opts, "padding", 0)
end
local function pool_repr(self)
  return string.format("kernel_size=%s, stride=%s, padding=%s",
    tuplestr(self.kernel_size), tuplestr(self.stride), tuplestr(self.padding))
end

local AvgPool2d = define("AvgPool2d")
AvgPool2d.init = pool_init
function AvgPool2d:forward(x)
  return fdm.F.avg_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding })
end
AvgPool2d.extra_repr = pool_repr

local MaxPool2d = define("MaxPool2d")
MaxPool2d.init = pool_init
function MaxPool2d:forward(x)
  return fdm.F.max_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding })
end
function MaxPool2d:extra_repr()
  return pool_repr(self) .. ", dilation=1, ceil_mode=False"
end

-- reshaping -------------------------------------------------------------
local Flatten = define("Flatten")
function Flatten:init(start_dim, end_dim)
  self.start_dim, self.end_dim = start_dim or 2, end_dim or -1
end
function Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end
function Flatten:extra_repr()
  return string.format("start_dim=%d, end_dim=%d", self.start_dim, self.end_dim)
end

local Unflatten = define("Unflatten")
function Unflatten:init(dim, sizes)
  self.dim, self.unflattened_size = dim, { table.unpack(sizes) }
end
function Unflatten:forward(x)
  local shape = x.shape
  local nd = #shape
  local d = self.dim < 0 and nd + 1 + self.dim or self.dim
  assert(d >= 1 and d <= nd, "Unflatten: dim out of range")
  local out = {}
  for i = 1, d - 1 do out[#out + 1] = shape[i] end
  for _, s in ipairs(self.unflattened_size) do out[#out + 1] = s end
  for i = d + 1, nd do out[#out + 1] = shape[i] end
  return x:reshape(out)
end
function Unflatten:extra_repr()
  return string.format("dim=%d, unflattened_size=%s", self.dim, tuplestr(self.unflattened_size))
end

local Upsample = define("Upsample")
function Upsample:init(opts)
  if type(opts) == "number" then opts = { scale_factor = opts } end
  opts = opts or {}
  self.size, self.scale_factor = opts.size, opts.scale_factor
  assert(self.size or self.scale_factor, "Upsample: size or scale_factor needed")
  self.mode = opts.mode or "nearest"
  self.align_corners = opts.align_corners
end
function Upsample:forward(x)
  return fdm.F.interpolate(x, { size = self.size, scale_factor = self.scale_factor,
    mode = self.mode, align_corners = self.align_corners })
end
function Upsample:extra_repr()
  local s
  if self.scale_factor then
    s = "scale_factor=" .. (type(self.scale_factor) == "table" and tuplestr(self.scale_factor)
      or pyfloat(self.scale_factor))
  else
    s = "size=" .. tuplestr(self.size)
  end
  return s .. ", mode=" .. self.mode
end

-- containers ------------------------------------------------------------
local function module_args(...)
  local n = select("#", ...)
  local first = ...
  if n == 1 and type(first) == "table" and not is_module(first) then return first end
  return { ... }
end

local Sequential = define("Sequential")
function Sequential:init(...)
  local mods = module_args(...)
  if #mods == 0 and next(mods) ~= nil then
    -- named: {{"conv", m}, ...} is the ordered form; a plain map is sorted
    local names = {}
    for k in pairs(mods) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do self:add_module(k, mods[k]) end
    return
  end
  for i, m in ipairs(mods) do
    if type(m) == "table" and not is_module(m) and type(m[1]) == "string" then
      self:add_module(m[1], m[2])
    else
      assert(is_module(m), "Sequential: argument " .. i .. " is not a module")
      self:add_module(string.format("%d", i - 1), m)
    end
  end
end
function Sequential:forward(x, ...)
  for _, n in ipairs(self._module_names) do
    local m = self._modules[n]
    if m then x = m(x, ...) end
  end
  return x
end
function Sequential:append(m)
  self:add_module(string.format("%d", #self._module_names), m)
  return self
end

local ModuleList = define("ModuleList")
function ModuleList:init(...)
  for _, m in ipairs(module_args(...)) do self:append(m) end
end
function ModuleList:append(m)
  assert(is_module(m), "ModuleList:append: module expected")
  self:add_module(string.format("%d", #self._module_names), m)
  return self
end
function ModuleList:extend(list)
  -- instance method; the class-level extend (subclassing) is Module.extend
  if not is_module(self) then return Module.extend(self, list) end
  for _, m in ipairs(list) do self:append(m) end
  return self
end
function ModuleList:forward()
  error("ModuleList: not callable; iterate over its modules", 2)
end

return nn
