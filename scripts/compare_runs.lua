-- Compares training runs from their checkpoints: one loss plot with a
-- smoothed curve per run, and a table of the mean loss of every epoch.
-- Made for 2.6+ (the recipe against --no-scheduler), works for any runs that
-- lua/fdm/train.lua wrote.
--
--   ./build/fdm scripts/compare_runs.lua [--out out/compare_runs.png] [--smooth K]
--       [--title T] [--md FILE] RUN[=LABEL] RUN[=LABEL] ...
--
-- RUN is a training output folder (its checkpoint.safetensors is read) or a
-- checkpoint file. LABEL defaults to the run's lr and schedule, from the
-- checkpoint's metadata. --smooth K averages the last K batches (default: a
-- tenth of an epoch). --md FILE also writes the table as markdown.
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local ckpt = require "fdm.checkpoint"
local train = require "fdm.train"

local o = cli.parse_or_exit(arg, {
  name = "compare_runs", common = false,
  summary = "loss curves and per-epoch mean losses of training runs, from their checkpoints",
  positional = { name = "RUN[=LABEL]", min = 1,
    help = "a training output folder (holding checkpoint.safetensors) or a checkpoint file" },
  options = {
    { "out", "string", "out/compare_runs.png", "the loss plot" },
    { "smooth", "int", nil, "average the last K batches (default: a tenth of an epoch)", min = 1 },
    { "title", "string", "training loss", "title of the plot" },
    { "md", "string", nil, "also write the table as markdown to this file" },
  },
})
local function fail(msg) cli.usage_error("compare_runs: " .. msg) end
local runs = {}
for _, a in ipairs(o.positional) do
  local path, label = a:match("^(.-)=(.+)$")
  runs[#runs + 1] = { path = path or a, label = label }
end
local smooth = o.smooth

local function is_dir(p)
  local f = io.open(p .. "/.", "r")
  if f then f:close() return true end
  return false
end

local function default_label(meta)
  local lr = meta.lr and string.format("%g", meta.lr) or "?"
  local sched = tostring(meta.scheduler)   -- the scripts store "true"/"false"
  if sched == "true" then return "lr " .. lr .. ", ExponentialLR" end
  if sched == "false" then return "lr " .. lr .. ", constant" end
  return "lr " .. lr
end

---------------------------------------------------------------- read the runs
local max_epochs = 0
for _, r in ipairs(runs) do
  local file = is_dir(r.path) and (r.path .. "/checkpoint.safetensors") or r.path
  if not ckpt.exists(file) then fail("no checkpoint at '" .. file .. "' (a run folder or a checkpoint file expected)") end
  local ok, st = pcall(ckpt.load, file, { restore_rng = false })
  if not ok then fail((tostring(st):gsub("^[^:]*:%d+: ", ""):gsub("\n.*", ""))) end
  local h = st.history or {}
  if not h.loss or #h.loss == 0 or not h.epoch_loss or #h.epoch_loss == 0 then
    fail("'" .. file .. "' holds no loss history (not written by fdm.train?)")
  end
  r.file, r.meta, r.loss, r.epoch_loss = file, st.meta or {}, h.loss, h.epoch_loss
  r.epoch_time = h.epoch_time or {}
  r.label = r.label or default_label(r.meta)
  r.per_epoch = #h.loss / #h.epoch_loss
  max_epochs = math.max(max_epochs, #h.epoch_loss)
end

---------------------------------------------------------------- the table
local lines = {}
local head, rule = { "epoch" }, { "---" }
for _, r in ipairs(runs) do head[#head + 1] = r.label; rule[#rule + 1] = "---" end
lines[1] = "| " .. table.concat(head, " | ") .. " |"
lines[2] = "|" .. table.concat(rule, "|") .. "|"
for e = 1, max_epochs do
  local row = { tostring(e) }
  for _, r in ipairs(runs) do row[#row + 1] = r.epoch_loss[e] and string.format("%.4f", r.epoch_loss[e]) or "" end
  lines[#lines + 1] = "| " .. table.concat(row, " | ") .. " |"
end
local row = { "minutes" }
for _, r in ipairs(runs) do
  local s = 0
  for _, t in ipairs(r.epoch_time) do s = s + t end
  row[#row + 1] = #r.epoch_time > 0 and string.format("%.1f", s / 60) or ""
end
lines[#lines + 1] = "| " .. table.concat(row, " | ") .. " |"
local md = table.concat(lines, "\n") .. "\n"
io.write("mean training loss per epoch\n" .. md)
if o.md then
  local tmp = o.md .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(md)
  f:close()
  assert(os.rename(tmp, o.md))
  print("wrote " .. o.md)
end

---------------------------------------------------------------- the plot
-- x in epochs, so runs with different batch sizes line up
local series = {}
for _, r in ipairs(runs) do
  local k = smooth or math.max(1, math.floor(r.per_epoch / 10))
  -- from the first full window on: partial means of the first batches would
  -- stretch the axis over the start-up spike and flatten the differences
  local mean, x, y = train.running_mean(r.loss, k), {}, {}
  for j = math.min(k, #r.loss), #r.loss do x[#x + 1] = j / r.per_epoch; y[#y + 1] = mean[j] end
  series[#series + 1] = { name = r.label, x = x, y = y }
end
train.mkdir((o.out:match("^(.*)/[^/]*$")) or ".")
fdm.io.plot_curves(o.out, series, {
  logy = true, title = o.title, xlabel = "epoch",
  ylabel = string.format("loss, mean of the last %s batches (log scale)", smooth or "epoch/10") })
print("wrote " .. o.out)
