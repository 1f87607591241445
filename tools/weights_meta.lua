-- tools/weights_meta.lua: writes fdm's weight-file metadata (fdm.kind,
-- fdm.architecture, fdm.<sizes>; lua/fdm/weights.lua) into existing
-- safetensors files, keeping every other metadata key and every tensor's
-- bytes. Used once to label the shipped weights (weights/*.safetensors);
-- files that fdm writes now carry these keys already.
--
--   ./build/fdm tools/weights_meta.lua weights/ddpm_mnist.safetensors=ddpm \
--       weights/flow_class_mnist.safetensors=flow_class weights/mnist_classifier.safetensors=classifier
--
-- The kind's loader must accept the file (names and shapes of its model);
-- the rewritten file is checked byte for byte against the old one, tensor
-- by tensor, before it replaces it (fdm.io.save_safetensors writes a temp
-- file and renames it).
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local W = require "fdm.weights"

local args = cli.parse_or_exit(arg, {
  name = "weights_meta", script = "tools/weights_meta.lua", common = false,
  summary = "label safetensors weight files with fdm.kind, fdm.architecture and sizes",
  positional = { name = "FILE=KIND", help = "a weight file and its kind (ddpm, flow_class, classifier)", min = 1 },
  options = {},
})

-- the fdm.* keys of a file of `kind`, after its loader accepted it
local function metadata_for(path, kind)
  if kind == "ddpm" then
    local M = require "fdm.ddpm_model"
    return M.weight_metadata(M.load(path))
  elseif kind == "flow_class" then
    local cls = require "fdm.classifier"
    local model, _, D = cls.load_flow_class(path)
    return cls.flow_class_metadata(D, model.num_classes or 10)
  elseif kind == "classifier" then
    local cls = require "fdm.classifier"
    return cls.weight_metadata((cls.load(path)))
  end
  cli.usage_error("weights_meta: kind must be ddpm, flow_class or classifier, got '" .. tostring(kind) .. "'")
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- name -> the tensor's bytes, from the safetensors header's data_offsets
local function tensor_bytes(path)
  local s = slurp(path)
  local n = string.unpack("<I8", s)
  local header, data = s:sub(9, 8 + n), s:sub(9 + n)
  local out = {}
  for name, a, b in header:gmatch('"([^"]+)"%s*:%s*{[^}]-"data_offsets"%s*:%s*%[%s*(%d+)%s*,%s*(%d+)%s*%]') do
    out[name] = data:sub(tonumber(a) + 1, tonumber(b))
  end
  return out
end

for _, item in ipairs(args.positional) do
  local path, kind = item:match("^(.-)=([%w_]+)$")
  if not path then cli.usage_error("weights_meta: expected FILE=KIND, got '" .. item .. "'") end
  local add = metadata_for(path, kind)
  local tensors, meta = fdm.io.load_safetensors(path)
  local before = tensor_bytes(path)
  for k, v in pairs(add) do meta[k] = v end
  local tmp = path .. ".relabel"
  fdm.io.save_safetensors(tmp, tensors, meta)
  local after = tensor_bytes(tmp)
  local count = 0
  for name, bytes in pairs(before) do
    if after[name] ~= bytes then
      os.remove(tmp)
      error(("weights_meta: %s: tensor %s changed when rewritten"):format(path, name))
    end
    count = count + 1
  end
  for name in pairs(after) do
    if not before[name] then os.remove(tmp); error("weights_meta: " .. path .. ": new tensor " .. name) end
  end
  assert(os.rename(tmp, path))
  local keys = {}
  for k, v in pairs(add) do keys[#keys + 1] = k .. "=" .. v end
  table.sort(keys)
  print(("%s: %d tensors byte-identical; %s"):format(path, count, table.concat(keys, " ")))
end
