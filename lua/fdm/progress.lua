-- fdm.progress: tqdm-like progress bars.
--
--   local bar = fdm.progress.bar{total = #loader, desc = "epoch 1"}
--   for ... do ...; bar:update(1, {loss = l}) end
--   bar:close()
--
--   for i in fdm.progress.iter(1000, {desc = "train"}) do ... end
--   for i, v in fdm.progress.iter(list) do ... end
--
-- On a terminal the bar is redrawn in place with \r (at most every
-- `mininterval` seconds, 0.1 by default):
--   epoch 1:  42%|████▏     | 420/1000 [00:12<00:16, 34.50it/s, loss=0.0312]
-- Elsewhere (a log file, a pipe) it prints whole lines with an ASCII bar every
-- 10% (`every_percent`) or every `line_interval` seconds (30), and at close.
--
-- Options: total, desc, out (file handle, default io.stderr), tty (force the
-- terminal form on/off), ncols (line width; default $COLUMNS, else a 10-cell
-- bar), mininterval, every_percent, line_interval, unit ("it"), leave (keep
-- the finished bar on screen, default true), clock (a function giving
-- seconds, for tests), disable.

local fdm_lazy = setmetatable({}, { __index = function(_, k)
  local real = package.loaded.fdm
  if type(real) ~= "table" then return nil end
  return real[k]
end })

local progress = {}

-- wall clock in seconds: fdm.time() (monotonic, from the C core)
local function default_clock()
  return require("fdm.core").time
end

local function stderr_is_tty(out)
  if out ~= io.stderr and out ~= io.stdout then return false end
  local fd = out == io.stderr and 2 or 1
  local isatty = fdm_lazy.isatty
  if type(isatty) == "function" then
    local ok, r = pcall(isatty, fd)
    if ok then return r and true or false end
  end
  local ok, term = pcall(require, "term")
  if ok and type(term) == "table" and type(term.isatty) == "function" then
    local ok2, r = pcall(term.isatty, out)
    if ok2 then return r and true or false end
  end
  return false
end

---------------------------------------------------------------------------
-- formatting (as tqdm.format_meter)
---------------------------------------------------------------------------

-- "MM:SS" or "H:MM:SS"
function progress.format_interval(t)
  t = math.floor(t)
  local mins, s = t // 60, t % 60
  local h, m = mins // 60, mins % 60
  if h > 0 then return string.format("%d:%02d:%02d", h, m, s) end
  return string.format("%02d:%02d", m, s)
end

-- tqdm's format_num: the shorter of '%.3g' and the plain number
function progress.format_num(n)
  if type(n) ~= "number" then return tostring(n) end
  if math.type(n) == "integer" then return string.format("%d", n) end
  local f = string.format("%.3g", n):gsub("e%+0", "e+"):gsub("e%-0", "e-")
  local plain
  if n == math.floor(n) and math.abs(n) < 1e16 then
    plain = string.format("%.1f", n)
  else
    for p = 1, 17 do
      plain = string.format("%." .. p .. "g", n)
      if tonumber(plain) == n then break end
    end
  end
  if #f < #plain then return f end
  return plain
end

local UNICODE = { " ", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█" }
local ASCII = { " ", "1", "2", "3", "4", "5", "6", "7", "8", "9", "#" }

local function render_bar(frac, width, charset)
  frac = math.max(0, math.min(1, frac))
  local nsyms = #charset - 1
  local units = math.floor(frac * width * nsyms)
  local full, part = units // nsyms, units % nsyms
  local s = string.rep(charset[#charset], full)
  if full < width then
    s = s .. charset[part + 1] .. string.rep(charset[1], width - full - 1)
  end
  return s
end

-- number of characters (UTF-8 code points) in s
local function ulen(s) return utf8.len(s) or #s end

-- postfix table -> "k=v, k=v" in insertion order if given as a list of
-- pairs, else sorted by key
local function postfix_str(pf)
  if pf == nil then return "" end
  if type(pf) == "string" then return pf end
  local parts = {}
  if #pf > 0 and type(pf[1]) == "table" then
    for _, kv in ipairs(pf) do parts[#parts + 1] = tostring(kv[1]) .. "=" .. progress.format_num(kv[2]) end
  else
    local keys = {}
    for k in pairs(pf) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. progress.format_num(pf[k]) end
  end
  return table.concat(parts, ", ")
end
progress.postfix_str = postfix_str

-- the meter line for n of total after elapsed seconds
function progress.format_meter(n, total, elapsed, o)
  o = o or {}
  local unit = o.unit or "it"
  local rate = o.rate
  if rate == nil and elapsed > 0 then rate = n / elapsed end
  local rate_fmt
  if rate == nil or rate == 0 then
    rate_fmt = "?" .. unit .. "/s"
  elseif rate < 1 then
    rate_fmt = string.format("%5.2fs/%s", 1 / rate, unit)
  else
    rate_fmt = string.format("%5.2f%s/s", rate, unit)
  end
  local pf = o.postfix and o.postfix ~= "" and (", " .. o.postfix) or ""
  local desc = (o.desc and o.desc ~= "") and (o.desc .. ": ") or ""
  local el = progress.format_interval(elapsed)
  if not total then
    return string.format("%s%d%s [%s, %s%s]", desc, n, unit, el, rate_fmt, pf)
  end
  local frac = total > 0 and n / total or 1
  local remaining = (rate and rate > 0) and progress.format_interval((total - n) / rate) or "?"
  local l_bar = string.format("%s%3.0f%%|", desc, frac * 100)
  local r_bar = string.format("| %d/%d [%s<%s, %s%s]", n, total, el, remaining, rate_fmt, pf)
  local width = o.bar_width
  if not width then
    if o.ncols then
      width = math.max(1, o.ncols - ulen(l_bar) - ulen(r_bar))
    else
      width = 10
    end
  end
  return l_bar .. render_bar(frac, width, o.ascii and ASCII or UNICODE) .. r_bar
end

---------------------------------------------------------------------------
-- Bar
---------------------------------------------------------------------------

local Bar = {}
Bar.__index = Bar
progress.Bar = Bar

function progress.bar(opts)
  opts = opts or {}
  local out = opts.out or io.stderr
  local tty = opts.tty
  if tty == nil then tty = stderr_is_tty(out) end
  local ncols = opts.ncols
  if ncols == nil and tty then ncols = tonumber(os.getenv("COLUMNS") or "") end
  local clock = opts.clock or default_clock()
  local self = setmetatable({
    total = opts.total, desc = opts.desc, out = out, tty = tty, ncols = ncols,
    unit = opts.unit or "it", clock = clock, n = opts.initial or 0,
    mininterval = opts.mininterval or 0.1,
    every_percent = opts.every_percent or 10,
    line_interval = opts.line_interval or 30,
    leave = opts.leave ~= false, disable = opts.disable or false,
    postfix = nil, closed = false, last_len = 0,
  }, Bar)
  self.start_t = clock()
  self.last_draw_t = self.start_t
  self.last_line_t = self.start_t
  self.last_line_pct = -1
  if self.tty and not self.disable then self:refresh() end
  return self
end

function Bar:format()
  return progress.format_meter(self.n, self.total, self.clock() - self.start_t, {
    desc = self.desc, unit = self.unit, postfix = self.postfix_s, ncols = self.ncols,
    ascii = not self.tty,
  })
end

-- draws now (terminal form) or prints a line (plain form)
function Bar:refresh()
  if self.disable then return end
  local s = self:format()
  if self.tty then
    local len = ulen(s)
    local pad = self.last_len > len and string.rep(" ", self.last_len - len) or ""
    self.out:write("\r", s, pad)
    self.last_len = len
  else
    self.out:write(s, "\n")
    self.last_line_n = self.n
  end
  if self.out.flush then self.out:flush() end
end

-- set the fields shown after the rate; a table {loss = 0.1} or a string
function Bar:set_postfix(pf, refresh)
  self.postfix = pf
  self.postfix_s = postfix_str(pf)
  if refresh then self:refresh() end
end

function Bar:set_description(desc, refresh)
  self.desc = desc
  if refresh then self:refresh() end
end

-- advances by n (default 1); postfix optional
function Bar:update(n, postfix)
  if type(n) == "table" then postfix, n = n, 1 end
  self.n = self.n + (n or 1)
  if postfix ~= nil then self:set_postfix(postfix) end
  if self.disable or self.closed then return end
  local now = self.clock()
  if self.tty then
    if now - self.last_draw_t >= self.mininterval or (self.total and self.n >= self.total) then
      self.last_draw_t = now
      self:refresh()
    end
  else
    local due = false
    if self.total and self.total > 0 then
      local pct = math.floor(self.n * 100 / self.total / self.every_percent) * self.every_percent
      if pct > self.last_line_pct and self.n < self.total then
        self.last_line_pct = pct
        due = true
      end
    end
    if now - self.last_line_t >= self.line_interval then due = true end
    if due then
      self.last_line_t = now
      self:refresh()
    end
  end
end

function Bar:close()
  if self.closed then return end
  self.closed = true
  if self.disable then return end
  if self.tty then
    if self.leave then
      self:refresh()
      self.out:write("\n")
    else
      self.out:write("\r", string.rep(" ", self.last_len), "\r")
    end
  elseif self.last_line_n ~= self.n then
    self:refresh()
  end
  if self.out.flush then self.out:flush() end
end
Bar.__close = Bar.close

-- iterate over 1..n, or over a list's (i, v) pairs, with a bar
function progress.iter(src, opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local list
  if type(src) == "number" then
    o.total = o.total or src
  else
    assert(type(src) == "table", "progress.iter: a count or a list expected")
    list = src
    o.total = o.total or #src
  end
  local bar = progress.bar(o)
  local i = 0
  local started = false
  return function()
    if started then bar:update(1) end
    started = true
    i = i + 1
    if i > o.total then
      bar:close()
      return nil
    end
    if list then return i, list[i] end
    return i
  end, nil, nil, bar   -- bar is the loop's closing value: closed on break too
end

return progress
