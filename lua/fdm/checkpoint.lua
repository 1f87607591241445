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
-- __metadata__ (strings): "fdm.checkpoint" = "2" (the format version),
--   "epoch" (decimal), "rng" (JSON {"offset":..,"seed":..}), "rng.seed",
--   "rng.offset", "optim.<k>" (exact hyperparameters, decimal), "scheduler"
--   (JSON of the scheduler's state_dict), "scheduler.name", "meta" (JSON of
--   `meta`), "meta.<k>" (tostring of each top-level value).
-- A checkpoint may come from someone else: its fields are data, read by a
-- strict JSON parser (fdm.json, size and depth limits), never run as code,
-- and each is checked (type, range) with an error naming the field. Version
-- 1 checkpoints (fdm before issue 15 stored these fields as Lua literals)
-- are refused with a message saying so; ckpt.load_model still reads their
-- weights, which are plain tensors.
-- The file is written atomically by fdm.io.save_safetensors (temp file,
-- fsync, rename), so a crash leaves the previous checkpoint intact.
local fdm = require "fdm"
local json = require "fdm.json"

local ckpt = {}
ckpt.VERSION = "2"

-- a value as it reads in a message
local function show(v)
  if v == nil then return "nothing" end
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end

-- a bad file is the user's problem, not a bug: an error object that the fdm
-- executable prints as one line, without a stack trace (fdm.UsageError, as
-- fdm.cli's usage errors); tostring(err) gives the message
local UserError = { __name = "fdm.UsageError", __tostring = function(e) return e.message end }
local function user_error(msg) error(setmetatable({ message = msg }, UserError), 0) end
ckpt.user_error = user_error

local function bad(path, field, msg)
  user_error(string.format("checkpoint.load: '%s': field '%s' %s", path, field, msg))
end

-- the JSON field `field` of the metadata, decoded; nil when absent
local function field_json(metadata, field, path)
  local s = metadata[field]
  if s == nil then return nil end
  local ok, v = pcall(json.decode, s, { max_bytes = 1 << 20, max_depth = 32 })
  if not ok then bad(path, field, "is not valid JSON data (" .. tostring(v) .. ")") end
  return v
end
ckpt.field_json = field_json

local function check_version(metadata, path)
  local v = metadata["fdm.checkpoint"]
  if v == nil then
    user_error("checkpoint.load: '" .. path .. "' is not an fdm checkpoint (no fdm.checkpoint metadata)")
  end
  if v == "1" then
    user_error("checkpoint.load: '" .. path .. "' is a version 1 checkpoint, whose fields are Lua code; " ..
      "fdm no longer runs code from files (its weights still load with checkpoint.load_model); " ..
      "start the run again without --resume")
  end
  if v ~= ckpt.VERSION then
    bad(path, "fdm.checkpoint", string.format("is version %q; this fdm reads version %s", v, ckpt.VERSION))
  end
end

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
  local tensors, meta = {}, { ["fdm.checkpoint"] = ckpt.VERSION }
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
    meta["scheduler"] = json.encode(st.scheduler:state_dict())
    meta["scheduler.name"] = st.scheduler.__name or "?"
  end
  if st.epoch ~= nil then
    assert(math.type(st.epoch) == "integer" and st.epoch >= 0, "checkpoint.save: epoch must be a non-negative integer")
    meta["epoch"] = string.format("%d", st.epoch)
  end
  local rng = st.rng
  if rng == nil then rng = fdm.get_rng_state() end
  if rng then
    meta["rng"] = json.encode(rng)
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
    meta["meta"] = json.encode(st.meta)
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

---------------------------------------------------------------- validation
local function is_finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end

-- known ranges of scheduler fields (the rest: finite numbers)
local SCHED_MIN = { last_epoch = -1, _step_count = 0, gamma = 0, eta_min = 0, base_lrs = 0, _last_lr = 0,
                    start_factor = 0, end_factor = 0 }
local SCHED_POSITIVE = { gamma = true, T_max = true, step_size = true, start_factor = true, total_iters = true }
local SCHED_INT = { last_epoch = true, _step_count = true }

local function check_number(path, field, v, template, lo, positive, int)
  if type(v) ~= "number" then bad(path, field, "must be a number, got " .. show(v)) end
  if not is_finite(v) then bad(path, field, "must be finite, got " .. tostring(v)) end
  if (int or math.type(template) == "integer") and math.type(v) ~= "integer" then
    bad(path, field, "must be an integer, got " .. show(v))
  end
  if lo and v < lo then bad(path, field, string.format("must be >= %s, got %s", lo, show(v))) end
  if positive and not (v > 0) then bad(path, field, "must be positive, got " .. show(v)) end
end

-- the scheduler state must have the fields of `sched`'s own state, with the
-- same types (numbers finite, lists of the same length)
local function check_scheduler(path, sd, sched, name)
  if type(sd) ~= "table" or sd == json.null or #sd > 0 then bad(path, "scheduler", "must be a JSON object") end
  if sched.__name and name ~= sched.__name then
    bad(path, "scheduler.name", string.format("is %s, the scheduler is %s", show(name), sched.__name))
  end
  local want = sched:state_dict()
  for k in pairs(sd) do
    if want[k] == nil then bad(path, "scheduler", "has an unknown entry '" .. tostring(k) .. "'") end
  end
  for k, tv in pairs(want) do
    local f, v = "scheduler." .. k, sd[k]
    if v == nil then bad(path, f, "is missing") end
    if type(tv) == "number" then
      check_number(path, f, v, tv, SCHED_MIN[k], SCHED_POSITIVE[k], SCHED_INT[k])
    elseif type(tv) == "table" then
      if type(v) ~= "table" or v == json.null or #v ~= #tv or next(v, #v > 0 and #v or nil) ~= nil then
        bad(path, f, string.format("must be a list of %d numbers", #tv))
      end
      for i = 1, #tv do check_number(path, f .. "[" .. i .. "]", v[i], tv[i], SCHED_MIN[k]) end
    elseif type(tv) ~= type(v) then
      bad(path, f, "must be a " .. type(tv) .. ", got " .. show(v))
    end
  end
end

-- optim.<k> metadata: "true"/"false", a finite number or a comma list of them
local NUM = "^%s*-?[%d.]+[eE]?[-+]?%d*%s*$"
local function check_optim_meta(path, m)
  for k, v in pairs(m) do
    local f = "optim." .. k
    if v ~= "true" and v ~= "false" then
      for x in (v .. ","):gmatch("([^,]*),") do
        local n = x:match(NUM) and tonumber(x)
        if not is_finite(n) then bad(path, f, "must hold finite numbers, got " .. string.format("%q", v)) end
        if k:match("%.step$") and (math.type(n) ~= "integer" or n < 0) then
          bad(path, f, "must be a non-negative integer, got " .. string.format("%q", v))
        end
        if k:match("%.lr$") and n < 0 then bad(path, f, "must be >= 0, got " .. string.format("%q", v)) end
      end
    end
  end
end

-- optim.state.<i>.<name> tensors: the shape of parameter i (steps: one number)
local function check_optim_tensors(path, t, optimizer)
  local params = optimizer.all_params and optimizer:all_params() or {}
  for k, v in pairs(t) do
    local i, name = k:match("^state%.(%d+)%.(.+)$")
    if i then
      local p = params[tonumber(i) + 1]
      if p == nil then bad(path, "optim." .. k, "is state for parameter " .. i .. ", which the optimizer lacks") end
      if name ~= "step" and not (#v.shape == #p.shape and table.concat(v.shape, ",") == table.concat(p.shape, ",")) then
        bad(path, "optim." .. k, string.format("has shape [%s], the parameter [%s]",
          table.concat(v.shape, ", "), table.concat(p.shape, ", ")))
      end
      if name ~= "step" and v.dtype ~= p.dtype then
        bad(path, "optim." .. k, "is " .. v.dtype .. ", the parameter " .. p.dtype)
      end
    end
  end
end

-- Reads and checks every field first; restores what `into` names (model,
-- optimizer, scheduler; RNG unless restore_rng = false) only when all are
-- valid. Returns {epoch, history, meta, rng, tensors, metadata}.
function ckpt.load(path, into)
  into = into or {}
  local tensors, metadata = fdm.io.load_safetensors(path)
  check_version(metadata, path)
  local out = { tensors = tensors, metadata = metadata }
  -- epoch: a non-negative decimal integer
  local e = metadata["epoch"]
  if e ~= nil then
    local n = e:match("^%d+$") and #e <= 12 and math.tointeger(tonumber(e))
    if not n then bad(path, "epoch", "must be a non-negative integer, got " .. string.format("%q", e)) end
    out.epoch = n
  end
  -- rng: {seed = integer, offset = integer}
  local rng = field_json(metadata, "rng", path)
  if rng ~= nil then
    if type(rng) ~= "table" or rng == json.null then bad(path, "rng", "must be a JSON object {seed, offset}") end
    for k in pairs(rng) do
      if k ~= "seed" and k ~= "offset" then bad(path, "rng", "has an unknown entry '" .. tostring(k) .. "'") end
    end
    for _, k in ipairs({ "seed", "offset" }) do
      if math.type(rng[k]) ~= "integer" then bad(path, "rng." .. k, "must be an integer, got " .. show(rng[k])) end
    end
    out.rng = rng
  end
  -- meta: a JSON object
  local meta = field_json(metadata, "meta", path)
  if meta ~= nil and (type(meta) ~= "table" or meta == json.null or #meta > 0) then
    bad(path, "meta", "must be a JSON object")
  end
  out.meta = meta or {}
  -- history: names listed, each an int64 list of bit patterns
  out.history = {}
  if metadata["history"] then
    for name in metadata["history"]:gmatch("[^,]+") do
      local b = tensors["history_bits." .. name]
      if b ~= nil and (b.dtype ~= "int64" or #b.shape ~= 1) then
        bad(path, "history_bits." .. name, "must be a 1-d int64 tensor")
      end
      out.history[name] = b and doubles_of(b:tolist()) or {}
    end
  end
  local sched_sd
  if into.scheduler then
    sched_sd = field_json(metadata, "scheduler", path)
    if sched_sd == nil then user_error("checkpoint.load: '" .. path .. "' has no scheduler state") end
    check_scheduler(path, sched_sd, into.scheduler, metadata["scheduler.name"])
  end
  local optim_t, optim_m
  if into.optimizer then
    optim_t = with_prefix(tensors, "optim.")
    optim_m = {}
    for k, v in pairs(metadata) do
      local kk = k:match("^optim%.(.+)$")
      if kk and kk ~= "name" then optim_m[kk] = v end
    end
    if metadata["optim.name"] and into.optimizer.name and metadata["optim.name"] ~= into.optimizer.name then
      user_error(string.format("checkpoint.load: '%s' holds %s state, the optimizer is %s",
        path, metadata["optim.name"], into.optimizer.name))
    end
    check_optim_meta(path, optim_m)
    check_optim_tensors(path, optim_t, into.optimizer)
  end
  -- all fields valid: restore
  if into.model then
    local sd = with_prefix(tensors, "model.")
    local dev = into.model:parameters()[1]
    dev = dev and dev.device or "cpu"
    if dev ~= "cpu" then for k, v in pairs(sd) do sd[k] = v:to(dev) end end
    into.model:load_state_dict(sd)
  end
  if into.optimizer then into.optimizer:load_state_tensors(optim_t, optim_m) end
  if into.scheduler then into.scheduler:load_state_dict(sched_sd) end
  if out.rng and into.restore_rng ~= false then fdm.set_rng_state(out.rng) end
  return out
end

-- the checked `meta` field of a checkpoint file ({} when absent)
function ckpt.read_meta(path)
  local _, metadata = fdm.io.load_safetensors(path)
  check_version(metadata, path)
  local meta = field_json(metadata, "meta", path)
  if meta ~= nil and (type(meta) ~= "table" or meta == json.null or #meta > 0) then
    bad(path, "meta", "must be a JSON object")
  end
  return meta or {}
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
