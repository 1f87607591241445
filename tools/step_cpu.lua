-- tools/step_cpu.lua: process CPU seconds (os.clock, both threads) of one
-- UNet train step (forward, MSE, backward, Adam) and one eval forward, min
-- over STEP_REPS (default 5) after a warm-up. For A/B runs on a loaded box,
-- where CPU time is steadier than wall time; e.g. the transposed convs' two
-- paths in one build:
--   FDM_CONVT2=0 ./build/fdm tools/step_cpu.lua;  FDM_CONVT2=1 ./build/fdm tools/step_cpu.lua
-- STEP_CONFIG: cc_D64_B64 (default), uncond_D128_B256, cc_D64_B512 (eval only)
local fdm = rawget(_G, "fdm") or require "fdm"

local REPS = tonumber(os.getenv("STEP_REPS") or "5")
local name = os.getenv("STEP_CONFIG") or "cc_D64_B64"
local kind, D, N = name:match("^(%a+)_D(%d+)_B(%d+)$")
D, N = tonumber(D), tonumber(N)
local m, train, eval = dofile((arg[0]:match("^(.*)/[^/]*$") or "tools") .. "/../bench/unet_step.lua")(kind, D, N)

local function cpu(f)
  f(); collectgarbage(); collectgarbage()
  local best = math.huge
  for _ = 1, REPS do
    local t0 = os.clock()
    f()
    best = math.min(best, os.clock() - t0)
    collectgarbage("step", 0)
  end
  return best
end

local modes = os.getenv("STEP_MODES") or (N > 256 and "eval" or "train,eval")
local out = { ("%s FDM_CONVT2=%s"):format(name, os.getenv("FDM_CONVT2") or "auto") }
if modes:find("train") then m:train(); out[#out + 1] = ("train %.3f s CPU"):format(cpu(train)) end
if modes:find("eval") then m:eval(); out[#out + 1] = ("eval %.3f s CPU"):format(cpu(eval)) end
print(table.concat(out, "  "))
