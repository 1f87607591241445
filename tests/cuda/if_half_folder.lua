-- tests/cuda/if_half_folder.lua: a copy of the tiny DeepFloyd folders whose
-- weights are float16 variants (every matrix and conv kernel half, as the
-- published *.fp16.safetensors), for loading with {variant = "fp16"}.
--   dofile(".../if_half_folder.lua")(root, dir, {"if-i", "if-ii"})
-- Used by tests/deepfloyd_device_spec.lua and tests/cuda/deepfloyd.lua.
local fdm = require "fdm"

local function half_copy(src, dst)
  local t = fdm.io.load_safetensors(src)
  local out = {}
  for k, v in pairs(t) do out[k] = v:dim() >= 2 and v:half() or v end
  fdm.io.save_safetensors(dst, out)
end

return function(root, dir, stages)
  local function sh(cmd) assert(os.execute(cmd), "if_half_folder: failed: " .. cmd) end
  sh(("mkdir -p '%s/text_encoder' && cp -r '%s/scheduler' '%s/tokenizer' '%s/' && cp '%s/text_encoder/config.json' '%s/text_encoder/'")
    :format(dir, root, root, dir, root, dir))
  half_copy(root .. "/text_encoder/model.safetensors", dir .. "/text_encoder/model.fp16.safetensors")
  for _, s in ipairs(stages or { "if-i" }) do
    sh(("mkdir -p '%s/%s/unet' && cp '%s/%s/unet/config.json' '%s/%s/unet/'"):format(dir, s, root, s, dir, s))
    half_copy(("%s/%s/unet/diffusion_pytorch_model.safetensors"):format(root, s),
      ("%s/%s/unet/diffusion_pytorch_model.fp16.safetensors"):format(dir, s))
  end
  return dir
end
