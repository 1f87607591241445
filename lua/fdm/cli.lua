-- fdm.cli: command-line options shared by the Part B scripts.
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
-- `choices`), "ints" (comma-separated integers, "" = empty list).
-- An option entry is { name, type, default, help [, choices = {...}] [, min = n] }
-- or the same as named fields.
local cli = {}

-- the options every script takes (defaults: scripts override with `defaults`)
cli.COMMON = {
  { "epochs", "int", 10, "training epochs", min = 1 },
  { "batch", "int", 64, "batch size", min = 1 },
  { "lr", "number", 1e-2, "learning rate (Adam)" },
  { "hidden", "int", 64, "UNet hidden width D", min = 1 },
  { "seed", "int", 0, "random seed (model init, data order, noise)" },
  { "subset", "int", 0, "train on the first N training images (0 = all)", min = 0 },
  { "dataset", "choice", "mnist", "training data", choices = { "mnist", "fashion" } },
  { "device", "choice", "cpu", "where the model runs", choices = { "cpu", "cuda" } },
  { "resume", "flag", false, "continue from OUT/checkpoint.safetensors" },
  { "out", "string", nil, "output directory (default out/<script>)" },
  { "steps", "int", 300, "sampling steps T", min = 1 },
  { "cfg", "number", 5, "classifier-free guidance scale gamma" },
}

local function normalize(o)
  local e = {}
  e.name = o.name or o[1]
  e.type = o.type or o[2]
  if o.default ~= nil then e.default = o.default else e.default = o[3] end
  e.help = o.help or o[4] or ""
  e.choices, e.min, e.max = o.choices, o.min, o.max
  assert(type(e.name) == "string" and e.name:match("^[%w][%w%-]*$"), "cli: bad option name " .. tostring(e.name))
  assert(({ int = 1, number = 1, string = 1, flag = 1, choice = 1, ints = 1 })[e.type],
    "cli: option --" .. e.name .. " has unknown type " .. tostring(e.type))
  if e.type == "choice" then assert(type(e.choices) == "table" and #e.choices > 0, "cli: --" .. e.name .. " needs choices") end
  if e.type == "flag" and e.default == nil then e.default = false end
  e.key = e.name:gsub("%-", "_")
  return e
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
  if spec.common ~= false then for _, o in ipairs(cli.COMMON) do add(o) end end
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
  if e.type == "ints" then return " (default: " .. (#d > 0 and table.concat(d, ",") or "auto") .. ")" end
  if type(d) == "number" and math.type(d) == "float" then return " (default: " .. string.format("%.6g", d) .. ")" end
  return " (default: " .. tostring(d) .. ")"
end

local function metavar(e)
  if e.type == "flag" then return "" end
  if e.type == "choice" then return " " .. table.concat(e.choices, "|") end
  if e.type == "ints" then return " N,N,..." end
  if e.type == "int" then return " N" end
  if e.type == "number" then return " X" end
  return " " .. e.key:upper()
end

-- the --help text
function cli.help(spec)
  local list = option_list(spec)
  local lines = {}
  lines[#lines + 1] = "usage: fdm " .. (spec.script or ("scripts/" .. (spec.name or "script") .. ".lua")) .. " [options]"
  if spec.summary then lines[#lines + 1] = spec.summary end
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
  return table.concat(n, ", ")
end

local function convert(e, s)
  local bad = function(what)
    error({ cli_error = string.format("option --%s: %s, got '%s'", e.name, what, s) }, 0)
  end
  if e.type == "string" then return s end
  if e.type == "flag" then
    if s == "true" or s == "1" or s == "yes" then return true end
    if s == "false" or s == "0" or s == "no" then return false end
    bad("expects true or false")
  end
  if e.type == "choice" then
    for _, c in ipairs(e.choices) do if c == s then return s end end
    bad("expects one of " .. table.concat(e.choices, ", "))
  end
  if e.type == "ints" then
    local out = {}
    for part in s:gmatch("[^,]+") do
      local v = math.tointeger(tonumber(part))
      if v == nil then bad("expects comma-separated integers") end
      out[#out + 1] = v
    end
    return out
  end
  local v = tonumber(s)
  if v == nil then bad(e.type == "int" and "expects an integer" or "expects a number") end
  if e.type == "int" then
    local i = math.tointeger(v)
    if i == nil then bad("expects an integer") end
    v = i
  else
    v = v + 0.0
  end
  if e.min and v < e.min then bad("must be at least " .. e.min) end
  if e.max and v > e.max then bad("must be at most " .. e.max) end
  return v
end

-- Parses argv (a list of strings, e.g. the global `arg`). Returns the
-- options table (with `given` = set of keys given explicitly), or nil and the
-- help text when --help was asked. Raises "<message>" on any misuse (the
-- message names the valid options).
function cli.parse(argv, spec)
  spec = spec or {}
  local list, by = option_list(spec)
  local args, given = {}, {}
  for _, e in ipairs(list) do
    local d = e.default
    if type(d) == "table" then local c = {}; for i, v in ipairs(d) do c[i] = v end; d = c end
    args[e.key] = d
  end
  local function fail(msg)
    error(msg .. "\nvalid options: " .. valid_names(list), 0)
  end
  local i, n = 1, #(argv or {})
  while i <= n do
    local w = argv[i]
    if w == "--help" or w == "-h" then return nil, cli.help(spec) end
    local name, value = w:match("^%-%-([^=]+)=(.*)$")
    if not name then name = w:match("^%-%-(.+)$") end
    if not name then fail("unexpected argument '" .. w .. "' (options start with --)") end
    local idx = by[name]
    if not idx then fail("unknown option --" .. name) end
    local e = list[idx]
    if value == nil then
      if e.type == "flag" then
        value = "true"
      else
        i = i + 1
        value = argv[i]
        if value == nil then fail("option --" .. name .. " needs a value" .. metavar(e)) end
      end
    end
    local ok, v = pcall(convert, e, value)
    if not ok then
      if type(v) == "table" and v.cli_error then fail(v.cli_error) end
      error(v, 0)
    end
    args[e.key] = v
    given[e.key] = true
    i = i + 1
  end
  args.given = given
  args.script = spec.name
  return args
end

-- For scripts: a --device that is not there (no CUDA device, no CUDA build)
-- is said once, up front, without a traceback: the reason on stderr, exit 2.
function cli.check_device(name, device)
  if not device or device == "cpu" then return end
  local fdm = require "fdm"
  local ok, err = pcall(fdm.zeros, { 1 }, { device = device })
  if not ok then
    io.stderr:write(("%s: --device %s: %s\n"):format(name or "fdm", device, (tostring(err):gsub("^.-: to: ", ""))))
    os.exit(2)
  end
end

-- For scripts: --help prints the list and exits 0; an error prints the
-- message and the list to stderr and exits 2.
function cli.parse_or_exit(argv, spec)
  local ok, args, help = pcall(cli.parse, argv, spec)
  if not ok then
    io.stderr:write((spec.name or "fdm") .. ": " .. tostring(args) .. "\n\n" .. cli.help(spec))
    os.exit(2)
  end
  if args == nil then
    io.stdout:write(help)
    os.exit(0)
  end
  cli.check_device(spec.name, args.device)
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

return cli
