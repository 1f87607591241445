-- fdm.json: a small strict JSON encoder and decoder for data read from
-- files fdm did not necessarily write (checkpoint metadata). Data, never
-- code: the decoder is a plain parser (RFC 8259) with limits.
--
--   local json = require "fdm.json"
--   json.encode(v) -> string      numbers exact: integers as integers, floats
--                                 with 17 significant digits (and a ".0" when
--                                 they would read back as integers); keys sorted,
--                                 so equal values give equal strings
--   json.decode(s [, opts]) -> v  opts.max_depth (32), opts.max_bytes (1 MiB),
--                                 opts.big_integers ("error", or "float": an
--                                 integer beyond int64 reads as the nearest
--                                 float, as Hugging Face configs need for
--                                 model_max_length = 1e30);
--                                 raises "json: <problem> at byte N"
--
-- Refused when decoding: anything but one JSON value (plus white space),
-- trailing commas, comments, NaN/Infinity (and numbers that overflow to them),
-- integers outside int64, control characters and invalid UTF-8 in strings,
-- lone surrogates, duplicate keys, nesting deeper than max_depth, input
-- longer than max_bytes. Arrays decode to sequences, objects to tables with
-- string keys; null decodes to json.null (a sentinel), so lists keep their length.
local json = {}

json.null = setmetatable({}, { __name = "json.null", __tostring = function() return "null" end })

---------------------------------------------------------------- encode
local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function enc_string(s)
  if not utf8.len(s) then error("json.encode: string is not valid UTF-8", 0) end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function enc_number(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v or v == math.huge or v == -math.huge then
    error("json.encode: cannot store " .. tostring(v) .. " (JSON has no NaN or infinity)", 0)
  end
  local s = string.format("%.17g", v)
  if not s:find("[.eE]") then s = s .. ".0" end
  return s
end

local function encode(v, depth, out)
  if depth > 32 then error("json.encode: value nested deeper than 32 levels", 0) end
  local tv = type(v)
  if v == json.null then out[#out + 1] = "null"
  elseif tv == "number" then out[#out + 1] = enc_number(v)
  elseif tv == "string" then out[#out + 1] = enc_string(v)
  elseif tv == "boolean" then out[#out + 1] = tostring(v)
  elseif tv == "table" then
    local n, nkeys, strkeys = #v, 0, {}
    for k in pairs(v) do
      nkeys = nkeys + 1
      if type(k) == "string" then strkeys[#strkeys + 1] = k
      elseif not (math.type(k) == "integer" and k >= 1 and k <= n) then
        error("json.encode: table key " .. tostring(k) .. " is neither a string nor a list index", 0)
      end
    end
    if #strkeys > 0 and #strkeys ~= nkeys then
      error("json.encode: a table mixes list entries and string keys", 0)
    end
    if #strkeys == 0 and nkeys > 0 then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], depth + 1, out)
      end
      out[#out + 1] = "]"
    else
      table.sort(strkeys)
      out[#out + 1] = "{"
      for i, k in ipairs(strkeys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = enc_string(k)
        out[#out + 1] = ":"
        encode(v[k], depth + 1, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("json.encode: cannot store a " .. tv, 0)
  end
end

function json.encode(v)
  local out = {}
  encode(v, 0, out)
  return table.concat(out)
end

---------------------------------------------------------------- decode
local function fail(pos, what) error(string.format("json: %s at byte %d", what, pos), 0) end

local function skip_ws(s, pos)
  return (s:find("[^ \t\n\r]", pos)) or #s + 1
end

local esc_char = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function dec_string(s, pos)  -- s:sub(pos, pos) == '"'
  local parts, i = {}, pos + 1
  while true do
    local j = s:find('["\\%c]', i)
    if not j then fail(pos, "unterminated string") end
    local c = s:sub(j, j)
    parts[#parts + 1] = s:sub(i, j - 1)
    if c == '"' then
      local str = table.concat(parts)
      if not utf8.len(str) then fail(pos, "invalid UTF-8 in string") end
      return str, j + 1
    elseif c == "\\" then
      local e = s:sub(j + 1, j + 1)
      if esc_char[e] then
        parts[#parts + 1] = esc_char[e]
        i = j + 2
      elseif e == "u" then
        local h = s:match("^%x%x%x%x", j + 2)
        if not h then fail(j, "bad \\u escape") end
        local cp = tonumber(h, 16)
        i = j + 6
        if cp >= 0xDC00 and cp <= 0xDFFF then fail(j, "lone low surrogate") end
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = s:match("^\\u(%x%x%x%x)", i)
          lo = lo and tonumber(lo, 16)
          if not lo or lo < 0xDC00 or lo > 0xDFFF then fail(j, "lone high surrogate") end
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
          i = i + 6
        end
        parts[#parts + 1] = utf8.char(cp)
      else
        fail(j, "bad escape")
      end
    else
      fail(j, "control character in string")
    end
  end
end

local function dec_number(s, pos, opts)
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  -- the strict grammar: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [-+]? [0-9]+)?
  local int, frac, exp = s:match("^(-?%d+)(%.?%d*)([eE]?[-+]?%d*)", pos)
  if not int or not num then fail(pos, "bad number") end
  if int:match("^-?0%d") then fail(pos, "leading zero in number") end
  if frac == "." then fail(pos, "bad fraction") end
  if exp ~= "" and not exp:match("^[eE][-+]?%d+$") then fail(pos, "bad exponent") end
  local text = int .. frac .. exp
  local v
  if frac == "" and exp == "" then
    v = math.tointeger(tonumber(text))
    if not v and opts.big_integers == "float" then v = tonumber(text .. ".0") end
    if not v then fail(pos, "integer " .. text .. " outside the 64-bit range") end
  else
    v = tonumber(text)
    if not v or v ~= v or v == math.huge or v == -math.huge then fail(pos, "number " .. text .. " out of range") end
  end
  return v, pos + #text
end

local dec_value

local function dec_container(s, pos, depth, opts, close)
  if depth >= opts.max_depth then fail(pos, "nesting deeper than " .. opts.max_depth .. " levels") end
  local obj = close == "}"
  local out, n = {}, 0
  pos = skip_ws(s, pos + 1)
  if s:sub(pos, pos) == close then return out, pos + 1 end
  while true do
    local key
    if obj then
      if s:sub(pos, pos) ~= '"' then fail(pos, "expected a string key") end
      key, pos = dec_string(s, pos)
      if out[key] ~= nil then fail(pos, "duplicate key " .. string.format("%q", key)) end
      pos = skip_ws(s, pos)
      if s:sub(pos, pos) ~= ":" then fail(pos, "expected ':'") end
      pos = skip_ws(s, pos + 1)
    end
    local v
    v, pos = dec_value(s, pos, depth + 1, opts)
    if obj then out[key] = v else n = n + 1; out[n] = v end
    pos = skip_ws(s, pos)
    local c = s:sub(pos, pos)
    if c == "," then
      pos = skip_ws(s, pos + 1)
      if s:sub(pos, pos) == close then fail(pos, "trailing comma") end
    elseif c == close then
      return out, pos + 1
    else
      fail(pos, obj and "expected ',' or '}'" or "expected ',' or ']'")
    end
  end
end

dec_value = function(s, pos, depth, opts)
  pos = skip_ws(s, pos)
  local c = s:sub(pos, pos)
  if c == "{" then return dec_container(s, pos, depth, opts, "}")
  elseif c == "[" then return dec_container(s, pos, depth, opts, "]")
  elseif c == '"' then return dec_string(s, pos)
  elseif c == "-" or c:match("%d") then return dec_number(s, pos, opts)
  elseif s:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif s:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif s:sub(pos, pos + 3) == "null" then return json.null, pos + 4
  elseif c == "" then fail(pos, "unexpected end")
  end
  fail(pos, "unexpected character " .. string.format("%q", c))
end

function json.decode(s, opts)
  if type(s) ~= "string" then error("json.decode: a string expected, got " .. type(s), 2) end
  opts = { max_depth = opts and opts.max_depth or 32, max_bytes = opts and opts.max_bytes or (1 << 20),
           big_integers = opts and opts.big_integers or "error" }
  if #s > opts.max_bytes then fail(1, string.format("text of %d bytes (limit %d)", #s, opts.max_bytes)) end
  local v, pos = dec_value(s, 1, 0, opts)
  pos = skip_ws(s, pos)
  if pos <= #s then fail(pos, "trailing characters after the value") end
  return v
end

return json
