-- fdm.cli: the one command-line parser of fdm's scripts, and usage errors.
--
--   local cli = require "fdm.cli"
--   local args = cli.parse_or_exit(arg, {
--     name = "flow_time", summary = "time-conditioned flow matching (2.1-2.3)",
--     defaults = { epochs = 10, batch = 64, lr = 1e-2, hidden = 64 },   -- the spec's numbers
--     options = {                                                        -- script-specific ones
--       { "no-scheduler", "flag", false, "train without the ExponentialLR scheduler" },
--       { "sigma", "number", 0.5, "noise level" },
--     },
--   })
--   args.epochs, args.no_scheduler, args.given.lr (true when given on the command line)
--
-- Accepted forms: --name value, --name=value, and for flags --name (or
-- --name=true/false). --help (or -h) prints the option list. Unknown options,
-- missing values, values of the wrong type and positional words are errors
-- that name the valid options. Option names use dashes; the result table
-- uses underscores (--pure-noise -> args.pure_noise).
--
-- Types: "int", "number", "string", "flag", "choice" (spec entry field
-- `choices`), "ints" and "numbers" (comma-separated, "" = empty list; min and
-- max apply to every element).
-- An option entry is { name, type, default, help [, choices = {...}] [, min = n] [, max = n] }
-- or the same as named fields.
--
-- spec.common picks the options of cli.COMMON a script takes: a list of names
-- (each script lists exactly the options it reads, so --help does not lie),
-- false for none; absent, all of them. spec.positional = { name = "RUN",
-- help = "...", min = 1 } accepts words that do not start with -- into
-- args.positional.
--
-- Usage errors: cli.usage_error(msg) raises an error object that the fdm
-- executable prints as one line, without a stack trace, and exits with
-- status 2 (FDM_DEBUG=1 adds the trace); every other error is a bug and keeps
-- its trace. The parser, the weight loaders and the scripts raise them for
-- what a user typed wrong.
local cli = {}

---------------------------------------------------------------- usage errors
local UsageError = { __name = "fdm.UsageError" }
UsageError.__index = UsageError
UsageError.__tostring = function(e) return e.message end
cli.UsageError = UsageError

-- raises a usage error (message: one line saying what was wrong and what is accepted)
function cli.usage_error(message)
  error(setmetatable({ message = tostring(message) }, UsageError), 0)
end

function cli.is_usage_error(e) return getmetatable(e) == UsageError end

-- the options every script takes (defaults: scripts override with `defaults`)
cli.COMMON = {
  { "epochs", "int", 10, "training epochs", min = 1 },
  { "batch", "int", 64, "batch size", min = 1 },
  { "lr", "number", 1e-2, "learning rate (Adam)", min = 0 },
  { "hidden", "int", 64, "UNet hidden width D", min = 1 },
  { "seed", "int", 0, "random seed (model init, data order, noise)" },
  { "subset", "int", 0, "train on the first N training images (0 = all)", min = 0 },
  { "dataset", "choice", "mnist", "training data", choices = { "mnist", "fashion" } },
  { "device", "choice", "auto", "where the model runs (auto: the GPU when there is one; FDM_DEVICE sets the default)",
    choices = { "auto", "cpu", "cuda" } },
  { "resume", "flag", false, "continue from OUT/checkpoint.safetensors" },
  { "out", "string", nil, "output directory" },
  { "steps", "int", 300, "sampling steps T", min = 1 },
  { "cfg", "number", 5, "classifier-free guidance scale gamma" },
}

local TYPES = { int = 1, number = 1, string = 1, flag = 1, choice = 1, ints = 1, numbers = 1 }

local function normalize(o)
  local e = {}
  e.name = o.name or o[1]
  e.type = o.type or o[2]
  if o.default ~= nil then e.default = o.default else e.default = o[3] end
  e.help = o.help or o[4] or ""
  e.choices, e.min, e.max = o.choices, o.min, o.max
  assert(type(e.name) == "string" and e.name:match("^[%w][%w%-]*$"), "cli: bad option name " .. tostring(e.name))
  assert(TYPES[e.type], "cli: option --" .. e.name .. " has unknown type " .. tostring(e.type))
  if e.type == "choice" then assert(type(e.choices) == "table" and #e.choices > 0, "cli: --" .. e.name .. " needs choices") end
  if e.type == "flag" and e.default == nil then e.default = false end
  e.key = e.name:gsub("%-", "_")
  return e
end

local COMMON_BY_NAME = {}
for _, o in ipairs(cli.COMMON) do COMMON_BY_NAME[o[1]] = o end

-- the entries of cli.COMMON that spec.common selects
local function common_options(spec)
  if spec.common == false then return {} end
  if spec.common == nil or spec.common == true then return cli.COMMON end
  local wanted = {}
  for _, name in ipairs(spec.common) do
    assert(COMMON_BY_NAME[name], "cli: spec.common names unknown option --" .. tostring(name))
    wanted[name] = true
  end
  local out = {}   -- in cli.COMMON's order, whatever the list's
  for _, o in ipairs(cli.COMMON) do if wanted[o[1]] then out[#out + 1] = o end end
  return out
end

-- builds the ordered option list of a spec: common ones (with the spec's
-- default overrides) then the script's own (which may replace a common one)
local function option_list(spec)
  local list, by = {}, {}
  local function add(o)
    local e = normalize(o)
    if by[e.name] then
      list[by[e.name]] = e
    else
      list[#list + 1] = e; by[e.name] = #list
    end
  end
  for _, o in ipairs(common_options(spec)) do add(o) end
  for _, o in ipairs(spec.options or {}) do add(o) end
  local defaults = spec.defaults or {}
  for k, v in pairs(defaults) do
    local name = k:gsub("_", "-")
    assert(by[name], "cli: default for unknown option --" .. name)
    list[by[name]].default = v
  end
  if spec.out_default ~= nil and by.out and list[by.out].default == nil then list[by.out].default = spec.out_default end
  if by.out and list[by.out].default == nil and spec.name then list[by.out].default = "out/" .. spec.name end
  return list, by
end

local function fmt_default(e)
  local d = e.default
  if d == nil then return "" end
  if e.type == "flag" then return d and " (default: on)" or "" end
  if e.type == "ints" or e.type == "numbers" then
    return " (default: " .. (#d > 0 and table.concat(d, ",") or "auto") .. ")"
  end
  if type(d) == "number" and math.type(d) == "float" then return " (default: " .. string.format("%.6g", d) .. ")" end
  return " (default: " .. tostring(d) .. ")"
end

local function metavar(e)
  if e.type == "flag" then return "" end
  if e.type == "choice" then return " " .. table.concat(e.choices, "|") end
  if e.type == "ints" then return " N,N,..." end
  if e.type == "numbers" then return " X,X,..." end
  if e.type == "int" then return " N" end
  if e.type == "number" then return " X" end
  return " " .. e.key:upper()
end

-- what an option accepts, for error messages: "an integer >= 1", ...
local function accepted(e)
  local range = ""
  if e.min and e.max then range = (" in %s..%s"):format(e.min, e.max)
  elseif e.min then range = " >= " .. e.min
  elseif e.max then range = " <= " .. e.max end
  if e.type == "int" then return "an integer" .. range end
  if e.type == "number" then return "a number" .. range end
  if e.type == "ints" then return "comma-separated integers" .. (range ~= "" and (", each" .. range) or "") end
  if e.type == "numbers" then return "comma-separated numbers" .. (range ~= "" and (", each" .. range) or "") end
  if e.type == "flag" then return "true or false" end
  if e.type == "choice" then return "one of " .. table.concat(e.choices, ", ") end
  return "a string"
end

-- the --help text
function cli.help(spec)
  local list = option_list(spec)
  local lines = {}
  local pos = spec.positional
  lines[#lines + 1] = "usage: fdm " .. (spec.script or ("scripts/" .. (spec.name or "script") .. ".lua")) ..
    " [options]" .. (pos and (" " .. pos.name .. " ...") or "")
  if spec.summary then lines[#lines + 1] = spec.summary end
  if pos then lines[#lines + 1] = "  " .. pos.name .. ": " .. (pos.help or "") end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options:"
  local w = 0
  local left = {}
  for i, e in ipairs(list) do
    left[i] = "--" .. e.name .. metavar(e)
    w = math.max(w, #left[i])
  end
  for i, e in ipairs(list) do
    lines[#lines + 1] = string.format("  %-" .. w .. "s  %s%s", left[i], e.help, fmt_default(e))
  end
  lines[#lines + 1] = string.format("  %-" .. w .. "s  %s", "--help", "print this list and exit")
  return table.concat(lines, "\n") .. "\n"
end

local function valid_names(list)
  local n = {}
  for i, e in ipairs(list) do n[i] = "--" .. e.name end
  n[#n + 1] = "--help"
  return table.concat(n, " ")
end

-- Levenshtein distance, for "did you mean"
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function closest(list, name)
  local best, bd
  for _, e in ipairs(list) do
    local d = distance(name, e.name)
    if d <= math.max(2, #name // 3) and (not bd or d < bd) then best, bd = e.name, d end
  end
  return best
end

local function bad_value(e, s)
  error({ cli_error = string.format("option --%s expects %s, got '%s'", e.name, accepted(e), s) }, 0)
end

local function in_range(e, v, s)
  if (e.min and v < e.min) or (e.max and v > e.max) then bad_value(e, s) end
  return v
end

local function convert(e, s)
  if e.type == "string" then return s end
  if e.type == "flag" then
    if s == "true" or s == "1" or s == "yes" then return true end
    if s == "false" or s == "0" or s == "no" then return false end
    bad_value(e, s)
  end
  if e.type == "choice" then
    for _, c in ipairs(e.choices) do if c == s then return s end end
    bad_value(e, s)
  end
  if e.type == "ints" or e.type == "numbers" then
    local out = {}
    if s:match("^%s*$") then return out end
    for part in (s .. ","):gmatch("([^,]*),") do
      local v = tonumber(part)
      if e.type == "ints" then v = math.tointeger(v) elseif v then v = v + 0.0 end
      if v == nil or v ~= v then bad_value(e, s) end
      out[#out + 1] = in_range(e, v, s)
    end
    return out
  end
  local v = tonumber(s)
  if v == nil or v ~= v then bad_value(e, s) end
  if e.type == "int" then
    v = math.tointeger(v)
    if v == nil then bad_value(e, s) end
  else
    v = v + 0.0
  end
  return in_range(e, v, s)
end

-- Parses argv (a list of strings, e.g. the global `arg`). Returns the
-- options table (with `given` = set of keys given explicitly), or nil and the
-- help text when --help was asked. Raises a usage error (one line naming what
-- is accepted) on any misuse.
function cli.parse(argv, spec)
  spec = spec or {}
  local list, by = option_list(spec)
  local args, given, positional = {}, {}, {}
  for _, e in ipairs(list) do
    local d = e.default
    if type(d) == "table" then local c = {}; for i, v in ipairs(d) do c[i] = v end; d = c end
    args[e.key] = d
  end
  local prefix = spec.name and (spec.name .. ": ") or ""
  local function fail(msg) cli.usage_error(prefix .. msg) end
  local i, n = 1, #(argv or {})
  local only_positional = false
  while i <= n do
    local w = argv[i]
    if not only_positional and (w == "--help" or w == "-h") then return nil, cli.help(spec) end
    local name, value
    if not only_positional then
      name, value = w:match("^%-%-([^=]+)=(.*)$")
      if not name then name = w:match("^%-%-(.+)$") end
    end
    if w == "--" and spec.positional and not only_positional then
      only_positional = true
    elseif not name then
      if spec.positional and (only_positional or not w:match("^%-.")) then
        positional[#positional + 1] = w
      else
        fail("unexpected argument '" .. w .. "' (options start with --; valid options: " .. valid_names(list) .. ")")
      end
    else
      local idx = by[name]
      if not idx then
        local near = closest(list, name)
        fail("unknown option --" .. name .. (near and (" (did you mean --" .. near .. "?)") or "") ..
          "; valid options: " .. valid_names(list))
      end
      local e = list[idx]
      if value == nil then
        if e.type == "flag" then
          value = "true"
        else
          i = i + 1
          value = argv[i]
          if value == nil then fail("option --" .. name .. " needs a value: " .. accepted(e)) end
        end
      end
      local ok, v = pcall(convert, e, value)
      if not ok then
        if type(v) == "table" and v.cli_error then fail(v.cli_error) end
        error(v, 0)
      end
      args[e.key] = v
      given[e.key] = true
    end
    i = i + 1
  end
  if spec.positional then
    local need = spec.positional.min or 0
    if #positional < need then
      fail(("needs at least %d %s argument%s (see --help)"):format(need, spec.positional.name, need == 1 and "" or "s"))
    end
    args.positional = positional
  end
  args.given = given
  args.script = spec.name
  -- --device auto is resolved here, so no caller ever sees "auto"; device_by says how
  if args.device == "auto" then args.device, args.device_by = cli.auto_device() end
  return args
end

-- the choices of a script's --device: cpu, cuda (checked by check_device, so
-- a machine without one gets a clear error) and any other device loaded as a
-- backend plugin (the tests' "fake" device, run through `fdm -e`)
function cli.device_choices()
  local fdm = require "fdm"
  local list, seen = { "auto", "cpu", "cuda" }, { auto = true, cpu = true, cuda = true }
  local ok, devs = pcall(fdm.devices)
  for _, d in ipairs(ok and devs or {}) do
    if not seen[d] then seen[d] = true; list[#list + 1] = d end
  end
  return list
end

-- --precision of the sampling scripts: the model's convolutions and matrix
-- products on float32 operands, or on bf16/fp16 ones with float32 sums
-- (fdm.autocast; what makes a GPU fast, emulated bit for bit on the CPU)
cli.PRECISION = { "precision", "choice", "fp32",
  "the model's convolutions and matrix products: fp32, or bf16 / fp16 operands with float32 sums " ..
  "(fdm.autocast; fast on a GPU)", choices = { "fp32", "bf16", "fp16" } }
local AUTOCAST_OF = { fp32 = false, bf16 = "bfloat16", fp16 = "float16" }
-- the fdm.autocast dtype of a --precision value (nil for fp32)
function cli.autocast_of(precision)
  local a = AUTOCAST_OF[precision or "fp32"]
  if a == nil then
    error(("--precision must be fp32, bf16 or fp16, got '%s'"):format(tostring(precision)), 2)
  end
  return a or nil
end

-- whether device answers (a tensor can be made there), and the reason when it does not
local function device_answers(device)
  local fdm = require "fdm"
  return pcall(fdm.zeros, { 1 }, { device = device })
end

-- For scripts: a --device that is not there (no CUDA device, no CUDA build)
-- is said once, up front, without a traceback: the reason on stderr, exit 2.
-- label: where the device came from (default "--device DEVICE")
function cli.check_device(name, device, label)
  if not device or device == "cpu" then return end
  local ok, err = device_answers(device)
  if not ok then
    io.stderr:write(("%s: %s: %s\n"):format(name or "fdm", label or ("--device " .. device),
      (tostring(err):gsub("^.-: to: ", ""))))
    os.exit(2)
  end
end

-- --device auto (every script's default): FDM_DEVICE when set, else the GPU
-- when a CUDA device answers, else the CPU. Returns the device and where it
-- came from ("FDM_DEVICE" or "auto"). A GPU is never left idle by a
-- default, and a machine without one runs as before.
function cli.auto_device()
  local env = os.getenv("FDM_DEVICE")
  if env and env ~= "" and env ~= "auto" then return env, "FDM_DEVICE" end
  if device_answers("cuda") then return "cuda", "auto" end
  return "cpu", "auto"
end

-- For scripts: --help prints the list and exits 0; a misuse raises a usage
-- error (the fdm executable prints it as one line and exits 2).
function cli.parse_or_exit(argv, spec)
  local args, help = cli.parse(argv, spec)
  if args == nil then
    io.stdout:write(help)
    io.stdout:flush()
    os.exit(0)
  end
  local by = args.device_by
  local label = by == "FDM_DEVICE" and ("FDM_DEVICE=" .. args.device) or nil
  if by ~= "auto" then cli.check_device(spec.name, args.device, label) end   -- auto chose a device that answered
  if by and args.device ~= "cpu" then   -- a run that leaves the CPU by default says so once
    io.stderr:write(("%s: running on %s (%s)\n"):format(spec.name or "fdm", args.device,
      label or "--device auto found it; --device cpu keeps the CPU"))
  end
  return args
end

-- "key=value ..." of the options (for logs and checkpoint metadata)
function cli.describe(args, spec)
  local list = option_list(spec or {})
  local parts = {}
  for _, e in ipairs(list) do
    local v = args[e.key]
    if v ~= nil then
      if type(v) == "table" then v = table.concat(v, ",") end
      parts[#parts + 1] = e.name .. "=" .. tostring(v)
    end
  end
  return table.concat(parts, " ")
end

-- the option entries of a spec, in --help order (for tests and tools)
function cli.options(spec)
  return (option_list(spec or {}))
end

return cli
