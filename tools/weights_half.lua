-- tools/weights_half.lua: stores a weight file's float32 tensors as float16
-- (half the size; the loaders widen them back to float32 on load), keeping
-- every other tensor (int64 batch-norm counters) and every metadata key,
-- and adding fdm.stored_dtype = float16. Refuses a tensor whose values do
-- not fit float16 (|x| > 65504) and reports the largest rounding error, so
-- a shipped file is only halved where float16 holds its values.
--   ./build/fdm tools/weights_half.lua IN.safetensors OUT.safetensors
-- The output is written atomically (temp file + rename); IN may equal OUT.
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"

local args = cli.parse_or_exit(arg, {
  name = "weights_half", script = "tools/weights_half.lua", common = false,
  summary = "store a safetensors weight file's float32 tensors as float16",
  positional = { name = "IN OUT", help = "the input and output files", min = 2, max = 2 },
  options = {},
})
local src, dst = args.positional[1], args.positional[2]
local ok, tensors, meta = pcall(fdm.io.load_safetensors, src)
if not ok then cli.usage_error(("weights_half: cannot read '%s': %s"):format(src, tostring(tensors):gsub("\n.*", ""))) end
local out, names = {}, {}
for k in pairs(tensors) do names[#names + 1] = k end
table.sort(names)
local ELEMENT_BYTES = { float32 = 4, float16 = 2, bfloat16 = 2, int64 = 8, int32 = 4, uint8 = 1, bool = 1, float64 = 8 }
local worst, worst_name, halved, bytes_in, bytes_out = 0, nil, 0, 0, 0
for _, k in ipairs(names) do
  local t = tensors[k]
  local size = (ELEMENT_BYTES[t.dtype] or 4) * t:numel()
  bytes_in = bytes_in + size
  if t.dtype == "float32" then
    local big = t:numel() > 0 and t:abs():max():item() or 0
    if big > 65504 then
      cli.usage_error(("weights_half: %s holds %g, beyond float16's range (65504); keep this file in float32"):format(k, big))
    end
    local h = t:to("float16")
    local err = t:numel() > 0 and (h:float() - t):abs():max():item() or 0
    if err > worst then worst, worst_name = err, k end
    out[k] = h
    halved = halved + 1
    bytes_out = bytes_out + size // 2
  else
    out[k] = t
    bytes_out = bytes_out + size
  end
end
meta = meta or {}
meta["fdm.stored_dtype"] = "float16"
fdm.io.save_safetensors(dst, out, meta)
print(("%s -> %s: %d float32 tensors stored as float16 (%d kept), %.2f MB -> %.2f MB of tensor data; "
  .. "largest rounding error %.3g (%s)"):format(src, dst, halved, #names - halved, bytes_in / 1e6, bytes_out / 1e6,
  worst, worst_name or "-"))
