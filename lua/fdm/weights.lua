-- fdm.weights: where weight files are found, and what they hold.
--
--   local W = require "fdm.weights"
--   W.find("ddpm_mnist.safetensors")       -> a path, searched in FDM_WEIGHTS and the installation
--   W.resolve("weights/ddpm_mnist.safetensors") -> that path when it exists, else the shipped file
--   local tensors, meta, kind = W.read(path, {kind = "ddpm", what = "--model"})
--   W.check_state(path, tensors, net:state_dict(), "ClassConditionalUNet D=32")  -- first mismatch raised
--   W.metadata("ddpm", "ClassConditionalUNet", {hidden = 32, ...}) -> the fdm.* keys to save
--
-- fdm's weight files say what they are in their safetensors metadata:
--   fdm.kind          what the weights are for (a key of W.KINDS: ddpm, flow_class, ...)
--   fdm.architecture  the network (ClassConditionalUNet, MnistClassifier, ...)
--   fdm.<size>        the sizes the network is built with (fdm.hidden, fdm.num_classes, ...)
-- A loader refuses an fdm file of another kind with a message naming both.
-- Files without fdm.kind (a PyTorch or diffusers export, or fdm files older
-- than these keys, whose kind is read from their "script" metadata when
-- they have it) are accepted when their tensor names and shapes match the
-- model, and refused with the first mismatch otherwise. Every refusal is a
-- usage error (fdm.cli): one line, exit status 2.
--
-- Search path of the shipped weights: the directories of FDM_WEIGHTS
-- (':'-separated), then the installation: <source tree>/weights when fdm runs
-- from its source tree, PREFIX/share/fdm/weights when installed (`make
-- install`). So `fdm anagram` finds them from any working directory.
local cli = require "fdm.cli"

local W = {}

W.KINDS = {
  ddpm = "a class-conditioned DDPM (epsilon prediction; fdm.ddpm_model, scripts/train_ddpm.lua)",
  flow_class = "a class-conditioned flow-matching UNet (Part B 2.4-2.6, scripts/flow_class.lua)",
  flow_time = "a time-conditioned flow-matching UNet (Part B 2.1-2.3, scripts/flow_time.lua)",
  denoiser = "a one-step denoising UNet (Part B 1.2, scripts/denoiser.lua)",
  classifier = "the MNIST classifier (fdm.classifier, scripts/train_classifier.lua)",
}

-- "script" metadata of fdm files written before fdm.kind -> their kind
local LEGACY_SCRIPT_KIND = {
  train_ddpm = "ddpm", flow_class = "flow_class", flow_time = "flow_time", denoiser = "denoiser",
  train_classifier = "classifier",
}

---------------------------------------------------------------- paths
local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end
W.exists = exists

-- the installation's root, from this file's place: <root>/lua/fdm/weights.lua
-- in the source tree, <PREFIX>/share/lua/5.4/fdm/weights.lua when installed
local function this_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) ~= "@" then return nil end
  return src:sub(2):match("^(.*)/[^/]*$") or "."
end

function W.install_dirs()
  local dir = this_dir()
  if not dir then return {} end
  local out = {}
  local tree = dir:match("^(.*)/lua/fdm$") or (dir == "lua/fdm" and ".") or nil
  if tree then out[#out + 1] = tree .. "/weights" end
  local prefix = dir:match("^(.*)/share/lua/[%d%.]+/fdm$")
  if prefix then out[#out + 1] = prefix .. "/share/fdm/weights" end
  return out
end

function W.search_dirs()
  local dirs = {}
  local env = os.getenv("FDM_WEIGHTS")
  if env and env ~= "" then
    for d in env:gmatch("[^:]+") do dirs[#dirs + 1] = d end
  end
  for _, d in ipairs(W.install_dirs()) do dirs[#dirs + 1] = d end
  return dirs
end

-- a shipped file by name ("ddpm_mnist.safetensors"): the first of the search
-- directories that has it, or nil and the list of places looked at
function W.find(name)
  local looked = {}
  for _, d in ipairs(W.search_dirs()) do
    local p = d .. "/" .. name
    if exists(p) then return p end
    looked[#looked + 1] = d
  end
  return nil, looked
end

-- the file a user or a default named: itself when it exists (relative to
-- the working directory); else, for a relative path, the file of the same
-- name in the search directories ("weights/x.safetensors" from another
-- directory finds the shipped x.safetensors). Raises a usage error naming
-- the places looked at when there is none (and `hint`: how to get the file).
function W.resolve(path, what, hint)
  if exists(path) then return path end
  local tail = hint and ("; " .. hint) or ""
  if path:sub(1, 1) ~= "/" then
    local found, looked = W.find(path:match("([^/]*)$"))
    if found then return found end
    local where = #looked > 0 and (" nor in " .. table.concat(looked, ", ")) or ""
    cli.usage_error(("%sno weights at '%s' (not in the working directory%s; FDM_WEIGHTS adds directories)%s")
      :format(what and (what .. ": ") or "", path, where, tail))
  end
  cli.usage_error(("%sno weights at '%s' (no such file)%s"):format(what and (what .. ": ") or "", path, tail))
end

---------------------------------------------------------------- kinds
-- the kind an fdm file says it holds: fdm.kind, else an older file's
-- "script" (or checkpoint "meta.script") metadata; nil for foreign files
function W.kind_of(meta)
  meta = meta or {}
  if meta["fdm.kind"] then return meta["fdm.kind"] end
  local script = meta.script or meta["meta.script"]
  if script and LEGACY_SCRIPT_KIND[script] then return LEGACY_SCRIPT_KIND[script] end
  -- fdm.ddpm_model.save wrote these before fdm.kind existed
  if meta.prediction == "epsilon" and meta.time_input == "t/T" then return "ddpm" end
  if meta.model == "MnistClassifier" then return "classifier" end
  return nil
end

local function describe_kind(kind)
  return W.KINDS[kind] and (kind .. ", " .. W.KINDS[kind]) or kind
end

-- the fdm.* metadata of a weight file (values as strings)
function W.metadata(kind, architecture, sizes)
  assert(W.KINDS[kind], "fdm.weights: unknown kind " .. tostring(kind))
  local m = { ["fdm.kind"] = kind, ["fdm.architecture"] = architecture }
  for k, v in pairs(sizes or {}) do m["fdm." .. k] = tostring(v) end
  return m
end

-- reads a weight file for a loader expecting `opts.kind`: a missing file or
-- an fdm file of another kind is a usage error. Returns tensors, metadata,
-- and the kind the file declares (nil for foreign files).
function W.read(path, opts)
  opts = opts or {}
  local fdm = require "fdm"
  local what = opts.what and (opts.what .. ": ") or ""
  path = W.resolve(path, opts.what, opts.hint)
  local ok, tensors, meta = pcall(fdm.io.load_safetensors, path)
  if not ok then
    cli.usage_error(("%s'%s' is not a readable safetensors file (%s)")
      :format(what, path, (tostring(tensors):gsub("\n.*", ""))))
  end
  meta = meta or {}
  local kind = W.kind_of(meta)
  if opts.kind and kind and kind ~= opts.kind then
    cli.usage_error(("%s'%s' holds %s; %s needs %s"):format(what, path, describe_kind(kind),
      opts.user or "this", describe_kind(opts.kind)))
  end
  return tensors, meta, kind, path
end

local function shape_str(s)
  local p = {}
  for i = 1, #s do p[i] = tostring(s[i]) end
  return "[" .. table.concat(p, ",") .. "]"
end

-- checks that `tensors` has exactly the names and shapes of the state dict
-- `want` (name -> tensor) of the model `model_name`; raises a usage error
-- with the first mismatch in name order
function W.check_state(path, tensors, want, model_name, what)
  local names = {}
  for k in pairs(want) do names[#names + 1] = k end
  table.sort(names)
  local prefix = (what and (what .. ": ") or "") .. "'" .. path .. "' does not match " .. (model_name or "the model")
  for _, k in ipairs(names) do
    local t = tensors[k]
    if t == nil then
      cli.usage_error(("%s: it has no tensor %s (expected shape %s)"):format(prefix, k, shape_str(want[k].shape)))
    end
    local a, b = t.shape, want[k].shape
    local same = #a == #b
    for i = 1, #b do if a[i] ~= b[i] then same = false end end
    if not same then
      cli.usage_error(("%s: tensor %s has shape %s, the model's is %s"):format(prefix, k, shape_str(a), shape_str(b)))
    end
  end
  local extra = {}
  for k in pairs(tensors) do if want[k] == nil then extra[#extra + 1] = k end end
  table.sort(extra)
  if #extra > 0 then
    cli.usage_error(("%s: it has a tensor %s the model does not (%d such)"):format(prefix, extra[1], #extra))
  end
end

return W
