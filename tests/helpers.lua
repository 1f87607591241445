-- tests/helpers.lua: assertions shared by the specs.
--
--   H.flat(t)                      -> flat Lua list of numbers (bool -> 1/0), shape
--   H.allclose(got, exp, opts)     -> ok, message   (|got-exp| <= atol + rtol*|exp|)
--   H.assert_close(got, exp, opts, label)  raises with max error and its location
--   H.gradcheck(fn, inputs, opts)  central finite differences (float32 inputs,
--                                  the scalar sum(out * R) accumulated in Lua doubles)
--   H.load_golden(path)            -> tensors (name -> tensor), params (case -> table)
--   H.json_decode(s)               minimal JSON reader (for safetensors headers)
--   H.f32(x)                       rounds a Lua number to float32
local fdm = require "fdm"
local H = {}

-- `make test` builds the fake second device (tests/c/fake_backend.c) and names
-- it here: loaded once, every device loop of the specs then runs on it too.
local fake = os.getenv("FDM_FAKE_BACKEND")
if fake and fake ~= "" and not fdm.supports("fake", "copy") then
  local ok, err = pcall(fdm.load_backend, fake)
  if not ok then error("tests/helpers.lua: cannot load the fake device: " .. tostring(err)) end
end

---------------------------------------------------------------- small utils
function H.f32(x) return (string.unpack("<f", string.pack("<f", x))) end

function H.shape_str(shape)
  local p = {}
  for i = 1, #shape do p[i] = tostring(shape[i]) end
  return "[" .. table.concat(p, ", ") .. "]"
end

local function to_cpu(t)
  if t.device ~= nil and t.device ~= "cpu" then return t:to("cpu") end
  return t
end

local function flatten_into(v, out)
  if type(v) == "table" then
    for i = 1, #v do flatten_into(v[i], out) end
  elseif type(v) == "boolean" then
    out[#out + 1] = v and 1 or 0
  else
    out[#out + 1] = v
  end
end

-- flat list of values and shape of a tensor, a number or a (nested) table
function H.flat(t)
  if type(t) == "number" or type(t) == "boolean" then
    local out = {}
    flatten_into(t, out)
    return out, {}
  end
  if type(t) == "table" then
    local out = {}
    flatten_into(t, out)
    return out, { #out }
  end
  t = to_cpu(t)
  local dt = t.dtype
  if dt == "float16" or dt == "bfloat16" then t = t:float() end
  local shape = {}
  for i = 1, #t.shape do shape[i] = t.shape[i] end
  local out = {}
  if #shape == 0 then
    flatten_into(t:item(), out)
  else
    flatten_into(t:tolist(), out)
  end
  return out, shape
end

local function unravel(k, shape)   -- k 1-based flat -> "[i, j, ...]" 0-based
  if #shape == 0 then return "[]" end
  local idx, r = {}, k - 1
  for d = #shape, 1, -1 do
    idx[d] = r % shape[d]
    r = r // shape[d]
  end
  return H.shape_str(idx)
end
H.unravel = unravel

local function isnan(x) return x ~= x end

---------------------------------------------------------------- allclose
-- opts: atol (1e-5), rtol (1e-5), check_dtype (true), equal_nan (false)
function H.allclose(got, exp, opts)
  opts = opts or {}
  local atol, rtol = opts.atol or 1e-5, opts.rtol or 1e-5
  if type(got) == "userdata" and type(exp) == "userdata" and opts.check_dtype ~= false then
    if got.dtype ~= exp.dtype then
      return false, string.format("dtype: got %s, expected %s", tostring(got.dtype), tostring(exp.dtype))
    end
  end
  local g, gs = H.flat(got)
  local e, es = H.flat(exp)
  if type(got) == "userdata" and type(exp) == "userdata" then
    local same = #gs == #es
    for i = 1, #gs do if gs[i] ~= es[i] then same = false end end
    if not same then
      return false, string.format("shape: got %s, expected %s", H.shape_str(gs), H.shape_str(es))
    end
  elseif #g ~= #e then
    return false, string.format("numel: got %d, expected %d", #g, #e)
  end
  local shape = (type(exp) == "userdata") and es or gs
  local nbad, worst, worst_err, worst_excess = 0, nil, 0, -math.huge
  local maxerr, maxerr_at = 0, nil
  for i = 1, #e do
    local a, b = g[i], e[i]
    local err, ok
    if isnan(a) or isnan(b) then
      ok = opts.equal_nan and isnan(a) and isnan(b)
      err = math.huge
    elseif a == b then   -- also equal infinities
      ok, err = true, 0
    else
      err = math.abs(a - b)
      ok = err <= atol + rtol * math.abs(b)
    end
    if err ~= math.huge and err > maxerr then maxerr, maxerr_at = err, i end
    if not ok then
      nbad = nbad + 1
      local excess = (err == math.huge) and math.huge or (err - (atol + rtol * math.abs(b)))
      if worst == nil or excess > worst_excess then worst, worst_err, worst_excess = i, err, excess end
    end
  end
  if nbad == 0 then return true, string.format("max abs err %.3g", maxerr) end
  local msg = string.format(
    "%d of %d elements differ (atol %g, rtol %g); worst at %s (0-based): got %.9g, expected %.9g, abs err %.3g; max abs err %.3g at %s; shape %s",
    nbad, #e, atol, rtol, unravel(worst, shape), g[worst], e[worst], worst_err, maxerr,
    maxerr_at and unravel(maxerr_at, shape) or "-", H.shape_str(shape))
  return false, msg
end

-- max |got - exp| relative to max |exp| (absolute where exp is all zero)
function H.rel_max(got, exp)
  local m = exp:abs():max():item()
  return (got - exp):abs():max():item() / (m > 0 and m or 1)
end

function H.assert_close(got, exp, opts, label)
  if got == nil then error((label or "value") .. ": got nil", 2) end
  local ok, msg = H.allclose(got, exp, opts)
  if not ok then error((label and (label .. ": ") or "") .. msg, 2) end
  return true
end

---------------------------------------------------------------- tensor building
-- builds a float32 (or dtype) tensor of `shape` from a flat list
function H.make(vals, shape, dtype)
  dtype = dtype or "float32"
  if #shape == 0 then return fdm.tensor(vals[1], { dtype = dtype }) end
  local t = fdm.tensor(vals, { dtype = dtype })
  if #shape ~= 1 then t = t:reshape(shape) end
  return t
end

---------------------------------------------------------------- gradcheck
-- fn(...) -> tensor (extra results ignored). inputs: list of tensors (float32
-- ones are checked; others passed through). opts:
--   eps (1e-2), atol (1e-2), rtol (1e-2), R (tensor shaped like the output;
--   default: a fixed pseudo-random one), wrt (list of input positions to check;
--   default: every float32 input), max_elems (16 per input; spread evenly)
-- Returns true or raises with the input, element and both gradient values.
function H.gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-2, opts.atol or 1e-2, opts.rtol or 1e-2
  local n = opts.n or #inputs
  local vals, shapes = {}, {}
  for i = 1, n do
    if inputs[i] ~= nil then vals[i], shapes[i] = H.flat(inputs[i]) end
  end
  local wrt = opts.wrt
  if not wrt then
    wrt = {}
    for i = 1, n do
      if inputs[i] ~= nil and inputs[i].dtype == "float32" then wrt[#wrt + 1] = i end
    end
  end
  local is_wrt = {}
  for _, i in ipairs(wrt) do is_wrt[i] = true end

  -- analytic gradients
  local leaves = {}
  for i = 1, n do
    local x = inputs[i]
    if x ~= nil then
      x = x:detach():clone()
      if is_wrt[i] then x:requires_grad_() end
    end
    leaves[i] = x
  end
  local out = fn(table.unpack(leaves, 1, n))
  local R = opts.R
  local _, oshape = H.flat(out:detach())
  local Rv
  if R then
    Rv = H.flat(R)
  else
    Rv = {}
    local s = 12345
    for k = 1, (#oshape == 0 and 1 or out:numel()) do
      s = (s * 1103515245 + 12345) % 2147483648
      Rv[k] = H.f32((s / 2147483648) * 2 - 1)
    end
  end
  local Rt = H.make(Rv, oshape)
  local loss = (out * Rt):sum()
  loss:backward()
  local analytic = {}
  for _, i in ipairs(wrt) do
    local gr = leaves[i].grad
    if gr == nil then
      analytic[i] = {}
      for k = 1, #vals[i] do analytic[i][k] = 0 end
    else
      analytic[i] = H.flat(gr)
    end
  end

  local function eval(args)
    return fdm.no_grad(function()
      local o = fn(table.unpack(args, 1, n))
      local ov = H.flat(o)
      local s = 0
      for k = 1, #ov do s = s + ov[k] * Rv[k] end
      return s
    end)
  end

  local failures = {}
  for _, i in ipairs(wrt) do
    local v = vals[i]
    local m = math.min(#v, opts.max_elems or 16)
    local picked = {}
    for j = 1, m do
      local k = 1 + ((j - 1) * #v) // m
      picked[#picked + 1] = k
    end
    for _, k in ipairs(picked) do
      local x0 = v[k]
      local xp, xm = H.f32(x0 + eps), H.f32(x0 - eps)
      local args = {}
      for q = 1, n do args[q] = inputs[q] end
      local pv = { table.unpack(v) }
      pv[k] = xp
      args[i] = H.make(pv, shapes[i])
      local fp = eval(args)
      pv[k] = xm
      args[i] = H.make(pv, shapes[i])
      local fm = eval(args)
      local num = (fp - fm) / (xp - xm)
      local ana = analytic[i][k]
      if not (math.abs(num - ana) <= atol + rtol * math.abs(num)) then
        failures[#failures + 1] = string.format("input %d element %s (0-based): analytic %.6g, numeric %.6g",
          i, unravel(k, shapes[i]), ana, num)
      end
    end
  end
  if #failures > 0 then
    local more = #failures > 6 and string.format(" (+%d more)", #failures - 6) or ""
    error("gradcheck failed (eps " .. eps .. ", atol " .. atol .. ", rtol " .. rtol .. "): " ..
      table.concat(failures, "; ", 1, math.min(6, #failures)) .. more, 2)
  end
  return true
end

---------------------------------------------------------------- JSON
function H.json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    pos = pos + 1
    local buf = {}
    while true do
      local c = s:sub(pos, pos)
      if c == "" then error("json: unterminated string") end
      if c == '"' then pos = pos + 1; break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        local map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
        if e == "u" then
          buf[#buf + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16))
          pos = pos + 6
        else
          buf[#buf + 1] = map[e]
          pos = pos + 2
        end
      else
        buf[#buf + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(buf)
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws()
        local k = str()
        ws()
        assert(s:sub(pos, pos) == ":", "json: ':' expected")
        pos = pos + 1
        t[k] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
        assert(d == ",", "json: ',' expected")
      end
    elseif c == "[" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
        assert(d == ",", "json: ',' expected")
      end
    elseif c == '"' then
      return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4; return nil
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      assert(num and #num > 0, "json: bad value at " .. pos)
      pos = pos + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  return value()
end

---------------------------------------------------------------- safetensors
-- pure-Lua reader: header (table), metadata (table), raw data (string)
function H.read_safetensors_raw(path)
  local f = assert(io.open(path, "rb"))
  local all = f:read("a")
  f:close()
  local n = string.unpack("<I8", all)
  local header = H.json_decode(all:sub(9, 8 + n))
  local meta = header.__metadata__ or {}
  header.__metadata__ = nil
  return header, meta, all:sub(9 + n)
end

local ST_DTYPE = { F32 = { "float32", "<f", 4 }, I64 = { "int64", "<i8", 8 }, BOOL = { "bool", "B", 1 } }

-- tensors (name -> fdm tensor), params (case -> decoded JSON table)
-- Tensors come from fdm.io.load_safetensors when it exists, else from the
-- pure-Lua reader (set FDM_TEST_PURE_ST=1 to force the latter).
function H.load_golden(path)
  local header, meta, data = H.read_safetensors_raw(path)
  local params = {}
  for k, v in pairs(meta) do params[k] = H.json_decode(v) end
  local tensors
  if fdm.io and fdm.io.load_safetensors and not os.getenv("FDM_TEST_PURE_ST") then
    tensors = fdm.io.load_safetensors(path)
  else
    tensors = {}
    for name, h in pairs(header) do
      local d = ST_DTYPE[h.dtype]
      local vals = {}
      local off = h.data_offsets[1]
      local count = (h.data_offsets[2] - off) // d[3]
      for k = 1, count do
        local v = string.unpack(d[2], data, off + (k - 1) * d[3] + 1)
        vals[k] = v
      end
      if d[1] == "bool" then
        tensors[name] = H.make(vals, h.shape, "uint8"):to("bool")
      else
        tensors[name] = H.make(vals, h.shape, d[1])
      end
    end
  end
  return tensors, params, header
end

-- available devices
function H.devices()
  if fdm.devices then
    local ok, d = pcall(fdm.devices)
    if ok and type(d) == "table" and #d > 0 then return d end
  end
  return { "cpu" }
end

-- path of a test data file, independent of the working directory
function H.here(rel)
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/[^/]*$") or "."
  return dir .. "/" .. rel
end

-- shell helpers for specs that run scripts: out, exit code of `cmd` (stderr folded in)
function H.sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return out:gsub("__rc=%d+%s*$", ""), rc
end

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

function H.slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- what f() writes with io.stderr:write, instead of writing it
function H.capture_stderr(f)
  local real, buf = io.stderr, {}
  io.stderr = { write = function(self, ...) for _, v in ipairs { ... } do buf[#buf + 1] = tostring(v) end return self end }
  local ok, err = pcall(f)
  io.stderr = real
  if not ok then error(err, 0) end
  return table.concat(buf)
end

-- a fresh empty directory
function H.tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p '" .. d:gsub("'", "'\\''") .. "'"))
  return d
end

-- the whole file (an error when it cannot be read: tests want to know)
function H.readall(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function H.writeall(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- the peak resident set (VmHWM, KiB) of a fresh `bin` running the Lua file
-- script (nil: nothing): read by the process itself from /proc, so no
-- /usr/bin/time is needed on the machine
function H.peak_rss_kb(bin, script)
  local function q(x) return "'" .. tostring(x):gsub("'", "'\\''") .. "'" end
  local code = (script and ("dofile(%q) "):format(script) or "")
    .. "for l in io.lines('/proc/self/status') do local v = l:match('^VmHWM:%s*(%d+)') "
    .. "if v then print('RSS ' .. v) end end"
  local out = H.sh(q(bin) .. " -e " .. q(code))
  return tonumber(out:match("RSS (%d+)")), out
end

-- f() must raise an error whose message contains every string given; returns the message
function H.raises(f, ...)
  local ok, err = pcall(f)
  assert(not ok, "expected an error, got success")
  err = tostring(err)
  for _, s in ipairs({ ... }) do
    assert(err:find(s, 1, true), ("error %q does not mention %q"):format(err, s))
  end
  return err
end

return H
