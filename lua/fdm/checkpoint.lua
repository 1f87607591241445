-- fdm.checkpoint: a whole training state in ONE safetensors file.
--
--   local ckpt = require "fdm.checkpoint"
--   ckpt.save(path, {
--     model = net, optimizer = opt, scheduler = sched,    -- scheduler optional
--     epoch = 3,                                          -- epochs completed
--     history = { loss = {...}, epoch_loss = {...} },     -- lists of numbers (exact)
--     rng = fdm.get_rng_state(),                          -- default: taken now
--     meta = { script = "flow_time", hidden = 64 },       -- any plain values
--   })
--   local st = ckpt.load(path, { model = net, optimizer = opt, scheduler = sched,
--                                restore_rng = true })    -- default true
--   st.epoch, st.history, st.meta, st.rng
--   ckpt.save_model(path, net, meta) / ckpt.load_model(path, net) -> meta
--   ckpt.read(path) -> tensors, metadata (raw file contents)
--
-- Layout (all names are plain safetensors entries, readable from PyTorch):
--   model.<state-dict name>      parameters and buffers (BatchNorm running stats)
--   optim.<state_tensors name>   optimizer state (Adam moments, steps, lr ...)
--   history.<name>               float32 copy of a history list (for people)
--   history_bits.<name>          int64 bit patterns of the same doubles (exact)
-- __metadata__ (strings): "fdm.checkpoint" = "1", "epoch", "rng.seed",
--   "rng.offset", "optim.<k>" (exact hyperparameters), "scheduler" (a Lua
--   literal of the scheduler's state_dict), "scheduler.name", "meta" (a Lua
--   literal of `meta`), "meta.<k>" (tostring of each top-level value).
-- The file is written atomically by fdm.io.save_safetensors (temp file,
-- fsync, rename), so a crash leaves the previous checkpoint intact.
local fdm = require "fdm"

local ckpt = {}

---------------------------------------------------------------- literals
-- Lua literal of plain data (numbers exact via %q: integers stay integers,
-- floats are written in hex)
local function literal(v, depth)
  depth = depth or 0
  assert(depth < 20, "checkpoint: value nested too deep")
  local tv = type(v)
  if tv == "number" then
    if v ~= v then return "(0/0)" end
    return string.format("%q", v)
  elseif tv == "string" then
    return string.format("%q", v)
  elseif tv == "boolean" or tv == "nil" then
    return tostring(v)
  elseif tv == "table" then
    local parts, n = {}, #v
    for i = 1, n do parts[#parts + 1] = literal(v[i], depth + 1) end
    local keys = {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      local vk = v[k]
      local tvk = type(vk)
      if tvk == "number" or tvk == "string" or tvk == "boolean" or tvk == "table" then
        parts[#parts + 1] = "[" .. literal(k, depth + 1) .. "]=" .. literal(vk, depth + 1)
      end
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("checkpoint: cannot store a " .. tv)
end
ckpt.literal = literal

local function parse_literal(s, what)
  local f, err = load("return " .. s, "=" .. what, "t", {})
  if not f then error("checkpoint: bad " .. what .. ": " .. err) end
  return f()
end
ckpt.parse_literal = parse_literal

---------------------------------------------------------------- doubles <-> int64 bits
local function bits_of(list)
  local out = {}
  for i, x in ipairs(list) do out[i] = string.unpack("<i8", string.pack("<d", x)) end
  return out
end

local function doubles_of(list)
  local out = {}
  for i, b in ipairs(list) do out[i] = string.unpack("<d", string.pack("<i8", b)) end
  return out
end

local function to_cpu(t)
  if t.device ~= "cpu" then return t:to("cpu") end
  return t
end

---------------------------------------------------------------- save / load
function ckpt.save(path, st)
  assert(type(path) == "string", "checkpoint.save: a path expected")
  assert(type(st) == "table", "checkpoint.save: a table {model=, optimizer=, ...} expected")
  local tensors, meta = {}, { ["fdm.checkpoint"] = "1" }
  if st.model then
    local sd = st.model:state_dict()
    for k, v in pairs(sd) do tensors["model." .. k] = to_cpu(v) end
  end
  if st.optimizer then
    local t, m = st.optimizer:state_tensors()
    for k, v in pairs(t) do tensors["optim." .. k] = to_cpu(v) end
    for k, v in pairs(m) do meta["optim." .. k] = v end
    meta["optim.name"] = st.optimizer.name
  end
  if st.scheduler then
    meta["scheduler"] = literal(st.scheduler:state_dict())
    meta["scheduler.name"] = st.scheduler.__name or "?"
  end
  if st.epoch ~= nil then meta["epoch"] = string.format("%d", st.epoch) end
  local rng = st.rng
  if rng == nil then rng = fdm.get_rng_state() end
  if rng then
    meta["rng"] = literal(rng)
    for k, v in pairs(rng) do meta["rng." .. k] = tostring(v) end
  end
  if st.history then
    local names = {}
    for name, list in pairs(st.history) do
      assert(type(list) == "table", "checkpoint.save: history." .. name .. " must be a list of numbers")
      names[#names + 1] = name
      if #list > 0 then
        tensors["history." .. name] = fdm.tensor(list)
        tensors["history_bits." .. name] = fdm.tensor(bits_of(list), { dtype = "int64" })
      end
    end
    table.sort(names)
    meta["history"] = table.concat(names, ",")
  end
  if st.meta then
    meta["meta"] = literal(st.meta)
    for k, v in pairs(st.meta) do
      if type(v) ~= "table" then meta["meta." .. tostring(k)] = tostring(v) end
    end
  end
  fdm.io.save_safetensors(path, tensors, meta)
  return path
end

-- the raw tensors and metadata of a file
function ckpt.read(path)
  return fdm.io.load_safetensors(path)
end

function ckpt.exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

local function with_prefix(tensors, prefix)
  local out, n = {}, #prefix
  for k, v in pairs(tensors) do
    if k:sub(1, n) == prefix then out[k:sub(n + 1)] = v end
  end
  return out
end

-- Restores what `into` names (model, optimizer, scheduler; RNG unless
-- restore_rng = false) and returns {epoch, history, meta, rng, tensors, metadata}.
function ckpt.load(path, into)
  into = into or {}
  local tensors, metadata = fdm.io.load_safetensors(path)
  if metadata["fdm.checkpoint"] == nil then
    error("checkpoint.load: '" .. path .. "' is not an fdm checkpoint (no fdm.checkpoint metadata)")
  end
  local out = { tensors = tensors, metadata = metadata }
  if into.model then
    local sd = with_prefix(tensors, "model.")
    local dev = into.model:parameters()[1]
    dev = dev and dev.device or "cpu"
    if dev ~= "cpu" then for k, v in pairs(sd) do sd[k] = v:to(dev) end end
    into.model:load_state_dict(sd)
  end
  if into.optimizer then
    local t = with_prefix(tensors, "optim.")
    local m = {}
    for k, v in pairs(metadata) do
      local kk = k:match("^optim%.(.+)$")
      if kk and kk ~= "name" then m[kk] = v end
    end
    if metadata["optim.name"] and into.optimizer.name and metadata["optim.name"] ~= into.optimizer.name then
      error(string.format("checkpoint.load: '%s' holds %s state, the optimizer is %s",
        path, metadata["optim.name"], into.optimizer.name))
    end
    into.optimizer:load_state_tensors(t, m)
  end
  if into.scheduler then
    if metadata["scheduler"] == nil then
      error("checkpoint.load: '" .. path .. "' has no scheduler state")
    end
    into.scheduler:load_state_dict(parse_literal(metadata["scheduler"], "scheduler"))
  end
  out.epoch = metadata["epoch"] and math.tointeger(tonumber(metadata["epoch"])) or nil
  if metadata["rng"] then
    out.rng = parse_literal(metadata["rng"], "rng")
    if into.restore_rng ~= false then fdm.set_rng_state(out.rng) end
  end
  out.history = {}
  if metadata["history"] then
    for name in metadata["history"]:gmatch("[^,]+") do
      local b = tensors["history_bits." .. name]
      out.history[name] = b and doubles_of(b:tolist()) or {}
    end
  end
  out.meta = metadata["meta"] and parse_literal(metadata["meta"], "meta") or {}
  return out
end

-- the model's state dict alone (the final weights), names as PyTorch's
function ckpt.save_model(path, model, meta)
  local tensors = {}
  for k, v in pairs(model:state_dict()) do tensors[k] = to_cpu(v) end
  local m = {}
  for k, v in pairs(meta or {}) do if type(v) ~= "table" then m[tostring(k)] = tostring(v) end end
  fdm.io.save_safetensors(path, tensors, m)
  return path
end

function ckpt.load_model(path, model)
  local tensors, meta = fdm.io.load_safetensors(path)
  if meta["fdm.checkpoint"] then tensors = with_prefix(tensors, "model.") end
  model:load_state_dict(tensors)
  return meta
end

return ckpt
