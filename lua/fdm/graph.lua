-- fdm.graph: record the device work of a function once and replay it (CUDA
-- graphs). docs/cuda.md, "Graphs".
--
--   local g, loss = fdm.graph(function() ... return loss end, {device = "cuda"})
--   g:replay()          -- runs the recorded work again; loss holds the new value
--   g:free()            -- or let the collector free it
--
-- The capture runs fn once and that run counts: its work is recorded and then
-- launched, so fdm.graph(fn) leaves the same state as fn() would. Every
-- replay repeats exactly the recorded kernels on the same memory: tensors fn
-- returned (and any it wrote into, e.g. parameters, .grad) are overwritten in
-- place; inputs must be tensors made before the capture and refilled in place
-- (x:copy_(batch)) before each replay. Values that change per run must live in
-- such tensors (the optimizer's lr and step: opt:use_device_scalars()).
-- Random draws inside fn read their offset on the device, so each replay draws
-- what the same code run eagerly at that point of the random stream would.
--
-- Inside fn nothing may wait for the device or copy between host and device
-- (:item(), printing, :to(), tensors from Lua tables, randperm): that is an
-- error. Run fn once eagerly before capturing it (first cuDNN algorithm
-- searches and allocations must not happen during the capture).
--
-- opts.emulate = true runs the same bookkeeping on any device without a
-- capture: each replay runs fn again (in device-offset mode) and copies its
-- results into the first run's tensors. The test suite drives graphs through
-- it on the CPU and the fake device.
local fdm = require "fdm"

local graph = {}

local Graph = {}
Graph.__index = Graph

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error("fdm.graph: options must be a table {device =, emulate =}, got " .. type(opts), 3)
  end
  return opts
end

-- returns the graph, then what fn returned
function graph.capture(fn, opts)
  if type(fn) ~= "function" then error("fdm.graph: a function expected, got " .. type(fn), 2) end
  opts = check_opts(opts)
  local handle = fdm._graph_begin({ device = opts.device or fdm.get_default_device(), emulate = opts.emulate })
  local res = table.pack(pcall(fn))
  if not res[1] then
    handle:abort()
    handle:free()
    error(res[2], 0)
  end
  local ok, err = pcall(handle.finish, handle)
  if not ok then
    handle:free()
    error(err, 0)
  end
  local device, emulated = handle:info()
  local self = setmetatable({ handle = handle, fn = fn, device = device, emulated = emulated,
    outputs = table.pack(table.unpack(res, 2, res.n)) }, Graph)
  return self, table.unpack(self.outputs, 1, self.outputs.n)
end

-- an emulated replay: fn again, its tensors copied into the captured run's
local function rerun(self)
  local h = self.handle
  h:rerun_begin()
  local res = table.pack(pcall(self.fn))
  h:rerun_end(res[1])
  if not res[1] then error(res[2], 0) end
  fdm.no_grad(function()
    for i = 1, self.outputs.n do
      local out, new = self.outputs[i], res[i + 1]
      if type(out) == "userdata" then out:detach():copy_(new) end
    end
  end)
end

-- runs the recorded work again; returns the captured outputs (now updated)
function Graph:replay()
  if not self.handle then error("graph:replay: this graph was freed", 2) end
  if self.emulated then rerun(self) else self.handle:replay() end
  return table.unpack(self.outputs, 1, self.outputs.n)
end

-- frees the graph now (its memory returns once the tensors it made are gone)
function Graph:free()
  if self.handle then self.handle:free() end
  self.handle, self.outputs, self.fn = nil, nil, nil
end

-- raises the error fdm.graph would give for these options (a device without
-- graphs), before any work is done
function graph.check(opts)
  opts = check_opts(opts)
  local device = opts.device or fdm.get_default_device()
  if not opts.emulate and not fdm.graph_supported({ device = device }) then
    error("graphs need a device that supports them (cuda); device '" .. device .. "' has none", 2)
  end
end

-- the device a graph is being captured (or rerun) on, or nil
function graph.capturing() return fdm.graph_capturing() end

return setmetatable(graph, { __call = function(_, fn, opts) return graph.capture(fn, opts) end })
