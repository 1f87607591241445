-- tests/cuda/open_device.lua: the device a GPU check (parity.lua, graphs.lua)
-- runs on. The fake device is loaded from FDM_FAKE_BACKEND when asked for;
-- a device that cannot hold a tensor ends the run with status 0 and
-- "no <DEV> device: skipped (reason)".
--   dofile(dir .. "/open_device.lua")(dev)
local fdm = require "fdm"

return function(dev)
  if dev == "fake" and not fdm.supports("fake", "copy") then
    local p = os.getenv("FDM_FAKE_BACKEND")
    if p and p ~= "" then pcall(fdm.load_backend, p) end
  end
  local ok, err = pcall(fdm.zeros, { 1 }, { device = dev })
  if not ok then
    print(("no %s device: skipped (%s)"):format(dev == "cuda" and "CUDA" or dev, tostring(err)))
    os.exit(0)
  end
end
