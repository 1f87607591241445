-- tests/cuda/check.lua: what the GPU checks run by fdm itself share (graphs.lua,
-- deepfloyd.lua): a case runner that prints one line per case and counts,
-- and the relative distance of two tensors.
--   local C = dofile(dir .. "/check.lua")(width)   -- width: of the name column
--   C.case(name, fn)   -- fn returns nil (pass) or what differs; errors fail too
--   C.rel(a, b)        -- |a - b| / |b| over the whole tensors, read on the CPU in float32
--   C.passed, C.failed
local fdm = require "fdm"

return function(width)
  local C = { passed = 0, failed = 0 }
  local fmt_ok, fmt_fail = "ok   %-" .. width .. "s (%.1f s)", "FAIL %-" .. width .. "s %s"
  function C.case(name, fn)
    local t0 = fdm.time()
    local ok, err = pcall(fn)
    if ok and err == nil then
      C.passed = C.passed + 1
      print(fmt_ok:format(name, fdm.time() - t0))
    else
      C.failed = C.failed + 1
      print(fmt_fail:format(name, tostring(err)))
    end
  end
  function C.rel(a, b)
    a, b = a:to("cpu"):float(), b:to("cpu"):float()
    local den = (b ^ 2):sum():sqrt():item()
    local num = ((a - b) ^ 2):sum():sqrt():item()
    return den > 0 and num / den or num
  end
  return C
end
