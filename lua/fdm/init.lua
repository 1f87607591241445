-- fdm: the Lua face of the runtime. `local fdm = require "fdm"`.
-- The C core (fdm.core) provides tensors, ops and autograd; the modules
-- below add the layers, optimizers, I/O and tools written in Lua.
local core = require "fdm.core"

local fdm = {}
for k, v in pairs(core) do fdm[k] = v end
package.loaded["fdm"] = fdm   -- submodules may require "fdm" while it loads

require("fdm.tensor")(fdm, core)          -- printing and Lua-level tensor methods
require("fdm.profile")(fdm)               -- fdm.profile_report

local function optional(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  if not tostring(mod):find("module '" .. name .. "' not found", 1, true) then error(mod, 0) end
  return nil
end

fdm.F = core.F
fdm.io = core.io
fdm.nn = optional "fdm.nn"
fdm.optim = optional "fdm.optim"
fdm.progress = optional "fdm.progress"
fdm.data = optional "fdm.data"
fdm.graph = optional "fdm.graph"

-- the model and experiment modules load on first use (fdm.diffusion.sample(...) in the REPL, with no
-- require); __methods lists them for the REPL's tab completion
local lazy = {}
for _, name in ipairs { "diffusion", "ddpm_model", "deepfloyd", "unet", "flow", "models", "weights", "checkpoint",
                        "classifier", "train" } do lazy[name] = {} end
setmetatable(fdm, {
  __methods = lazy,
  __index = function(t, k)
    if lazy[k] == nil then return nil end
    local mod = require("fdm." .. k)
    rawset(t, k, mod)
    return mod
  end,
})

return fdm
