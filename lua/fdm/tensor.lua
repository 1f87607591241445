-- Tensor methods written in Lua over the C core, and PyTorch-style printing.
return function(fdm, core)
  local T = core.Tensor
  local mt = debug.getregistry()["fdm.Tensor"]

  -- dtype shortcuts
  for name, dt in pairs { float = "float32", long = "int64", half = "float16",
                          bfloat16 = "bfloat16", byte = "uint8", bool = "bool", int64 = "int64" } do
    T[name] = function(t) return t:to(dt) end
  end
  T.cpu = function(t) return t:to("cpu") end
  T.cuda = function(t) return t:to("cuda") end
  T.type = function(t) return t.dtype end

  function T.flatten(t, first, last)
    local nd = t:dim()
    first = first or 1; last = last or nd
    if first < 0 then first = first + nd + 1 end
    if last < 0 then last = last + nd + 1 end
    if nd == 0 then return t:reshape(1) end
    local shape, n = {}, 1
    for d = 1, nd do
      if d < first or d > last then shape[#shape + 1] = t:size(d)
      else
        n = n * t:size(d)
        if d == last then shape[#shape + 1] = n end
      end
    end
    return t:reshape(shape)
  end

  function T.split(t, size, dim)
    dim = dim or 1
    local len, out, start = t:size(dim), {}, 1
    if type(size) == "table" then
      for _, s in ipairs(size) do out[#out + 1] = t:narrow(dim, start, s); start = start + s end
      if start - 1 ~= len then error(("split: sizes add up to %d, dim %d has %d"):format(start - 1, dim, len), 2) end
      return out
    end
    if size <= 0 then error("split: size must be positive", 2) end
    while start <= len do
      local n = math.min(size, len - start + 1)
      out[#out + 1] = t:narrow(dim, start, n)
      start = start + n
    end
    return out
  end

  function T.chunk(t, n, dim)
    dim = dim or 1
    if math.type(n) ~= "integer" or n < 1 then
      error(("chunk: the number of chunks must be a positive integer, got %s"):format(tostring(n)), 2)
    end
    return t:split(math.ceil(t:size(dim) / n), dim)
  end

  function T.norm(t, p)
    p = p or 2
    if p == 2 then return t:square():sum():sqrt() end
    return t:abs():pow(p):sum():pow(1 / p)
  end

  function T.lerp_(t, other, w)   -- t += w * (other - t)
    return t:add_(other - t, w)
  end

  function T.zero_grad_(t) t:zero_grad() return t end

  -- fdm.F-style activations as methods too (t:gelu() is in C)
  for _, k in ipairs { "softmax", "log_softmax" } do
    T[k] = function(t, dim) return fdm.F[k](t, dim) end
  end

  ---------------------------------------------------------------- printing
  -- Follows PyTorch's layout: integer-valued floats print as "1.", others with
  -- 4 decimals, scientific notation when the range is large; big tensors are
  -- summarised with "..." (3 items at each end of every dim).
  local EDGE, THRESHOLD = 3, 1000

  -- the values that will be shown (the first and last EDGE of long dims when summarising)
  local function collect(t, summarize)
    local vals = {}
    local function walk(x)
      if x:dim() == 0 then vals[#vals + 1] = x:item() return end
      local n = x:size(1)
      local skip = summarize and n > 2 * EDGE
      for i = 1, n do
        if not (skip and i > EDGE and i <= n - EDGE) then walk(x[i]) end
      end
    end
    walk(t)
    return vals
  end

  local function formatter(t, vals)
    local dt = t.dtype
    if dt == "bool" then return function(v) return v and "True" or "False" end end
    if dt == "int64" or dt == "uint8" then
      local w = 1
      for _, v in ipairs(vals) do w = math.max(w, #tostring(math.tointeger(v) or v)) end
      return function(v) return ("%" .. w .. "s"):format(tostring(math.tointeger(v) or v)) end
    end
    local allint, maxa, mina = true, 0, math.huge
    for _, v in ipairs(vals) do
      if v == v and v ~= math.huge and v ~= -math.huge then
        if v ~= math.floor(v) then allint = false end
        local a = math.abs(v)
        if a > maxa then maxa = a end
        if a ~= 0 and a < mina then mina = a end
      end
    end
    local sci = maxa >= 1e8 or (mina ~= math.huge and (mina < 1e-4 or maxa / mina > 1000) and not allint)
    local fmt
    if sci then fmt = function(v) return ("%.4e"):format(v) end
    elseif allint then fmt = function(v) return ("%.0f."):format(v) end
    else fmt = function(v) return ("%.4f"):format(v) end end
    local function f(v)
      if v ~= v then return "nan" elseif v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
      return fmt(v)
    end
    local w = 1
    for _, v in ipairs(vals) do w = math.max(w, #f(v)) end
    return function(v) return ("%" .. w .. "s"):format(f(v)) end
  end

  local function render(x, fmt, indent, summarize)
    if x:dim() == 0 then return fmt(x:item()) end
    local n, parts = x:size(1), {}
    local skip = summarize and n > 2 * EDGE
    if x:dim() == 1 then
      for i = 1, n do
        if skip and i == EDGE + 1 then parts[#parts + 1] = "..." end
        if not (skip and i > EDGE and i <= n - EDGE) then parts[#parts + 1] = fmt(x[i]:item()) end
      end
      return "[" .. table.concat(parts, ", ") .. "]"
    end
    local sep = "," .. string.rep("\n", x:dim() - 1) .. string.rep(" ", indent + 1)
    for i = 1, n do
      if skip and i == EDGE + 1 then parts[#parts + 1] = "..." end
      if not (skip and i > EDGE and i <= n - EDGE) then parts[#parts + 1] = render(x[i], fmt, indent + 1, summarize) end
    end
    return "[" .. table.concat(parts, sep) .. "]"
  end

  local raw_tostring = mt.__tostring
  mt.__tostring = function(t)
    local ok, s = pcall(function()
      local n = t:numel()
      local summarize = n > THRESHOLD
      local x = t
      if x.dtype == "float16" or x.dtype == "bfloat16" then x = x:float() end
      local body
      if n == 0 then body = "[]"
      else body = render(x, formatter(x, collect(x, summarize)), 7, summarize) end
      local extra = {}
      if t.device ~= "cpu" then extra[#extra + 1] = "device='" .. t.device .. "'" end
      if t.dtype ~= "float32" and t.dtype ~= "int64" and t.dtype ~= "bool" then extra[#extra + 1] = "dtype=" .. t.dtype end
      if n == 0 then extra[#extra + 1] = "size=(" .. table.concat(t.shape, ", ") .. ")" end
      if t.grad_fn then extra[#extra + 1] = "grad_fn=<" .. t.grad_fn .. ">"
      elseif t.requires_grad then extra[#extra + 1] = "requires_grad=True" end
      local s = "tensor(" .. body
      if #extra > 0 then s = s .. ", " .. table.concat(extra, ", ") end
      return s .. ")"
    end)
    if ok then return s end
    return raw_tostring(t)
  end

  -- how the REPL shows a plain table: {1, 4, 8, 8}, {lr = 0.001, betas = {...}}
  function fdm.repr(v, depth)
    depth = depth or 0
    if type(v) == "string" then return ("%q"):format(v) end
    if type(v) ~= "table" or getmetatable(v) then return tostring(v) end
    if depth > 1 then return "{...}" end
    local parts, n = {}, #v
    for i = 1, math.min(n, 20) do parts[#parts + 1] = fdm.repr(v[i], depth + 1) end
    if n > 20 then parts[#parts + 1] = ("... (%d items)"):format(n) end
    local keys = {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for i, k in ipairs(keys) do
      if i > 20 then parts[#parts + 1] = ("... (%d keys)"):format(#keys) break end
      local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. fdm.repr(k, 2) .. "]"
      parts[#parts + 1] = ks .. " = " .. fdm.repr(v[k], depth + 1)
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  end

  -- a one-line summary for REPL use: shape, dtype, stats
  function fdm.summary(t)
    local s = ("tensor shape=[%s] dtype=%s device=%s"):format(table.concat(t.shape, ", "), t.dtype, t.device)
    if t.dtype == "float32" and t:numel() > 0 then
      local x = t:detach()
      s = s .. (" min=%.4g max=%.4g mean=%.4g"):format(x:min():item(), x:max():item(), x:mean():item())
    end
    return s
  end
end
