-- fdm.models: loads the Part B UNets from their weight files, by kind.
--
--   local models = require "fdm.models"
--   local net, info = models.load(path, {kinds = {"denoiser", "flow_time"}, what = "--model"})
--   -- info = {kind =, hidden =, num_classes =, meta =, path =}
--
-- kind (fdm.weights): flow_class -> ClassConditionalUNet(1, D, classes),
-- flow_time -> TimeConditionalUNet(1, D), denoiser -> UnconditionalUNet(1, D).
-- A file without fdm.kind (a PyTorch export, an older checkpoint) gets its
-- kind from its tensors (fc1_c: class-conditioned, fc1_t: time-conditioned,
-- neither: the denoiser). Model files (plain state-dict names) and checkpoints
-- ("model." prefix) both load. Another kind than asked for, and tensors that
-- do not fit, are usage errors (one line; opts.what names the option).
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local W = require "fdm.weights"
local unet = require "fdm.unet"

local models = {}

models.ARCHITECTURE = {
  flow_class = "ClassConditionalUNet", flow_time = "TimeConditionalUNet", denoiser = "UnconditionalUNet",
}
local FIRST = "in_block.net.0.net.0.weight"

-- state-dict names without a common prefix such as "model." (checkpoints)
local function strip_prefix(sd)
  if sd[FIRST] then return sd end
  for k in pairs(sd) do
    local pre = k:match("^(.-)" .. FIRST:gsub("%.", "%%.") .. "$")
    if pre and pre ~= "" then
      local out = {}
      for k2, v in pairs(sd) do
        if k2:sub(1, #pre) == pre then out[k2:sub(#pre + 1)] = v end
      end
      return out
    end
  end
  return sd
end

local function kind_from_tensors(sd)
  if sd["fc1_c.net.0.weight"] then return "flow_class" end
  if sd["fc1_t.net.0.weight"] then return "flow_time" end
  return "denoiser"
end

function models.load(path, opts)
  opts = opts or {}
  local kinds = opts.kinds or { "flow_class", "flow_time", "denoiser" }
  local what = opts.what and (opts.what .. ": ") or ""
  local sd, meta, kind, resolved = W.read(path, { kind = #kinds == 1 and kinds[1] or nil, what = opts.what,
    user = opts.user })
  sd = strip_prefix(sd)
  kind = kind or kind_from_tensors(sd)
  local ok = false
  for _, k in ipairs(kinds) do if k == kind then ok = true end end
  if not ok then
    cli.usage_error(("%s'%s' holds %s (%s); expected %s"):format(what, resolved, kind,
      W.KINDS[kind] or "not a Part B UNet", table.concat(kinds, " or ")))
  end
  meta = meta or {}
  local D = opts.hidden or tonumber(meta["fdm.hidden"] or meta.hidden or meta["meta.hidden"] or meta.num_hiddens
    or meta["meta.num_hiddens"] or meta.D or "")
  if not D and sd[FIRST] then D = sd[FIRST].shape[1] end
  local arch = models.ARCHITECTURE[kind]
  if not D or not arch then
    cli.usage_error(("%s'%s' is not a Part B UNet (no %s, no hidden metadata)"):format(what, resolved, FIRST))
  end
  local net, name, nc
  if kind == "flow_class" then
    nc = sd["fc1_c.net.0.weight"] and sd["fc1_c.net.0.weight"].shape[2] or 10
    net, name = unet.ClassConditionalUNet(1, D, nc), ("ClassConditionalUNet(1, %d, %d)"):format(D, nc)
  else
    net, name = unet[arch](1, D), ("%s(1, %d)"):format(arch, D)
  end
  W.check_state(resolved, sd, net:state_dict(), name, opts.what)
  net:load_state_dict(sd)
  net:eval()
  return net, { kind = kind, hidden = D, num_classes = nc, meta = meta, path = resolved }
end

return models
