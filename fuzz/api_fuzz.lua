-- fuzz/api_fuzz.lua: the API fuzzer. Random calls of fdm's Lua API with
-- random arguments (small tensors of every dtype, edge integers such as 0,
-- -1, 2^32 + 2, 2^40, math.maxinteger, floats such as NaN and infinities,
-- strings, tables, nil), each under pcall. Tensors it gets back join the pool.
-- Fails (exit 1) when an error message is not a clean message (a broken
-- format, "invalid option", a non-string error object without __tostring),
-- when a returned tensor is inconsistent (negative sizes, numel not the
-- product of the shape); a crash or a sanitizer report ends the process.
--
--   lua5.4 fuzz/api_fuzz.lua [--seconds 60] [--seed S] [--verbose]
--
-- (with LUA_PATH/LUA_CPATH set as `make test` does). `make fuzz` runs it as
-- target "api"; `make test SAN=1` runs it for FDM_API_FUZZ_SECONDS (20) under
-- ASan/UBSan. Large allocations must fail cleanly: run it under `ulimit -v`
-- or ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=N.
-- A crash is reproduced with the printed seed and --verbose (each call is
-- printed before it runs).
local fdm = require "fdm"

local seconds, seed, verbose = 60, os.time(), false
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--seconds" then seconds = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--seed" then seed = math.tointeger(tonumber(arg[i + 1])); i = i + 1
    elseif a == "--verbose" then verbose = true
    else error("api_fuzz: unknown argument " .. a) end
    i = i + 1
  end
end
print(string.format("api_fuzz: seed %d, %g s", seed, seconds))
math.randomseed(seed)
fdm.manual_seed(seed)
local R = math.random

---------------------------------------------------------------- functions
-- every function of fdm, fdm.F and fdm.io (not those that write files
-- outside our folder, block, or end the process)
local SKIP = { repl = true, help = true, exit = true, isatty = true, no_grad = true, time = true,
               manual_seed = false }
local targets = {}
local function add_all(tbl, prefix)
  local names = {}
  for k, v in pairs(tbl) do if type(v) == "function" and not SKIP[k] then names[#names + 1] = k end end
  table.sort(names)
  for _, k in ipairs(names) do targets[#targets + 1] = { prefix .. k, tbl[k] } end
end
add_all(fdm, "fdm.")
add_all(fdm.F, "fdm.F.")
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local io_fns = {}
for k, v in pairs(fdm.io) do if type(v) == "function" then io_fns[#io_fns + 1] = k end end
table.sort(io_fns)
for _, k in ipairs(io_fns) do targets[#targets + 1] = { "fdm.io." .. k, fdm.io[k], io = true } end
-- tensor methods (through the metatable, as t:method(...))
local methods = {}
for k, v in pairs(fdm.Tensor or {}) do if type(v) == "function" then methods[#methods + 1] = k end end
table.sort(methods)

---------------------------------------------------------------- values
local DTYPES = { "float32", "float16", "bfloat16", "int64", "uint8", "bool" }
local INTS = { 0, 1, 2, 3, -1, -2, 4, 7, 8, 1 << 31, (1 << 32) + 2, 1 << 40, -(1 << 40),
               math.maxinteger, math.mininteger, math.maxinteger - 2 }
local FLOATS = { 0.5, -0.5, 1.0, 0 / 0, math.huge, -math.huge, 1e30, -1e-30, 2.5, 1e308 }
local STRINGS = { "float32", "int64", "bool", "uint8", "cpu", "cuda", "mean", "sum", "none", "tanh",
                  "nearest", "bilinear", "byte", "pm1", "", "x\0y" }

local pool = {}
local function fresh_tensor()
  local nd = R(0, 4)
  local shape = {}
  for i = 1, nd do shape[i] = R(0, 4) end
  local t = fdm.randn(table.unpack(shape))
  if nd == 0 then t = fdm.randn({}) end
  local dt = DTYPES[R(#DTYPES)]
  if dt ~= "float32" then t = t:to(dt) end
  if R(4) == 1 and t.dtype == "float32" then t:requires_grad_() end
  return t
end
for _ = 1, 12 do pool[#pool + 1] = fresh_tensor() end

local function value(depth)
  depth = depth or 0
  local k = R(100)
  if k <= 35 then return pool[R(#pool)]
  elseif k <= 55 then return INTS[R(#INTS)]
  elseif k <= 63 then return FLOATS[R(#FLOATS)]
  elseif k <= 70 then return STRINGS[R(#STRINGS)]
  elseif k <= 74 then return R(2) == 1
  elseif k <= 80 then return nil
  elseif k <= 92 and depth < 2 then   -- a list
    local t = {}
    for i = 1, R(0, 4) do t[i] = value(depth + 1) end
    return t
  elseif depth < 2 then                -- an options table
    local keys = { "dtype", "device", "stride", "padding", "dilation", "groups", "size", "scale_factor",
                   "mode", "range", "nrow", "scale", "requires_grad", "reduction", "keepdim", "unbiased",
                   "output_padding", "align_corners", "approximate", "delay_ms", "width", "captions" }
    local t = {}
    for _ = 1, R(1, 3) do t[keys[R(#keys)]] = value(depth + 1) end
    return t
  end
  return INTS[R(#INTS)]
end

local function describe(v)
  local tv = type(v)
  if tv == "userdata" then
    local ok, s = pcall(function() return "tensor[" .. table.concat(v.shape, ",") .. "]:" .. v.dtype end)
    return ok and s or "tensor(?)"
  elseif tv == "string" then return string.format("%q", v)
  elseif tv == "table" then
    local p = {}
    for k, x in pairs(v) do p[#p + 1] = tostring(k) .. "=" .. describe(x) end
    return "{" .. table.concat(p, ", ") .. "}"
  end
  return tostring(v)
end

---------------------------------------------------------------- checks
local failures = 0
local function bad(what, call)
  failures = failures + 1
  io.stderr:write("api_fuzz: " .. what .. "\n  call: " .. call .. "\n")
end

local function check_error(err, call)
  if type(err) ~= "string" then
    local mt = getmetatable(err)
    if not (mt and mt.__tostring) then bad("error object without a message: " .. describe(err), call) end
    return
  end
  if err:find("invalid option", 1, true) or err:find("invalid conversion", 1, true)
     or err:find("%%[%dl]") or err == "" then
    bad("broken error message: " .. err, call)
  end
end

local function check_tensor(t, call)
  local ok, err = pcall(function()
    local n, overflow = 1, false
    for _, sz in ipairs(t.shape) do
      assert(math.type(sz) == "integer" and sz >= 0, "size " .. tostring(sz))
      if sz == 0 then n = 0; overflow = false; break end
      if n > math.maxinteger // sz then overflow = true end
      n = n * sz
    end
    assert(not overflow, "shape " .. table.concat(t.shape, "x") .. ": the element count overflows int64")
    assert(t:numel() == n, "numel " .. t:numel() .. " for shape product " .. n)
    if n <= 64 then tostring(t) end
  end)
  if not ok then bad("inconsistent tensor: " .. tostring(err), call) end
end

---------------------------------------------------------------- the loop
local t0, calls, errors, slow = fdm.time(), 0, 0, 0
local n_targets = #targets + #methods
while fdm.time() - t0 < seconds do
  local args, nargs = {}, R(0, 5)
  for i = 1, nargs do args[i] = value() end
  local pick = R(n_targets)
  local name, fn
  if pick <= #targets then
    name, fn = targets[pick][1], targets[pick][2]
    if targets[pick].io and type(args[1]) ~= "userdata" then args[1] = dir .. "/f" .. R(3) .. ".bin" end
  else
    local m = methods[pick - #targets]
    name = "t:" .. m
    table.insert(args, 1, pool[R(#pool)])
    nargs = nargs + 1
    fn = function(self, ...) return self[m](self, ...) end
  end
  local desc = {}
  for i = 1, nargs do desc[i] = describe(args[i]) end
  local call = name .. "(" .. table.concat(desc, ", ") .. ")"
  if verbose then io.stderr:write(calls + 1, ": ", call, "\n") end
  local c0 = fdm.time()
  local res = table.pack(pcall(fn, table.unpack(args, 1, nargs)))
  local dt = fdm.time() - c0
  if dt > 1 then slow = slow + 1; io.stderr:write(string.format("api_fuzz: slow call (%.1f s): %s\n", dt, call)) end
  calls = calls + 1
  if not res[1] then
    errors = errors + 1
    check_error(res[2], call)
  else
    for i = 2, res.n do
      local v = res[i]
      if fdm.is_tensor(v) then
        check_tensor(v, call)
        if v:numel() <= 4096 and #pool < 64 then pool[#pool + 1] = v
        elseif v:numel() <= 4096 then pool[R(#pool)] = v end
      end
    end
  end
  if verbose and calls % 1000 == 0 then io.stderr:write(string.format("%d calls, %.1f s, clock %.1f\n", calls, fdm.time() - t0, os.clock())) end
  if calls % 200 == 0 then
    collectgarbage()
    if #pool < 8 then pool[#pool + 1] = fresh_tensor() end
  end
  if failures >= 20 then break end
end
os.execute("rm -rf '" .. dir .. "'")
print(string.format("api_fuzz: %d calls (%d raised errors) in %.1f s, %d targets, %d failures",
  calls, errors, fdm.time() - t0, n_targets, failures))
os.exit(failures == 0 and 0 or 1)
