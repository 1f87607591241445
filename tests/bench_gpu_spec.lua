-- tests/bench_gpu_spec.lua: bench/gpu_bench.lua (make bench-gpu) runs where
-- there is no GPU: on the fake device at tiny sizes it measures every
-- workload, prints the table and writes its JSON; asked for CUDA without a
-- device it says why and exits 0.
local BIN = os.getenv("FDM_BIN") or "build/fdm"
local FAKE = os.getenv("FDM_FAKE_BACKEND")

local function run(env)
  local p = io.popen(env .. " " .. BIN .. " bench/gpu_bench.lua 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

describe("bench-gpu", function()
  it("runs every workload on the fake device and writes the table and JSON", function()
    local json = os.tmpname()
    local out, rc = run("FDM_BENCH_DEVICE=fake BENCH_TORCH=0 BENCH_PROFILE=1 BENCH_GPU_JSON=" .. json ..
      " FDM_FAKE_BACKEND=" .. FAKE)
    assert.are.equal(0, rc, out)
    for _, w in ipairs({ "cc_train", "uncond_train", "cc_epoch", "cfg_sample" }) do
      -- the CUDA-graph rows (emulated on the fake device) and the per-kernel profile
      assert.truthy(out:match("| " .. w .. " | fdm, CUDA graph | fp32 | ~?[%d.]+ |"), w .. " graph missing:\n" .. out)
      assert.truthy(out:match("profile " .. w .. ": 2 steps, [%d.]+ ms per step profiled"), w .. " profile:\n" .. out)
      assert.truthy(out:match("profile " .. w .. ":%s+conv2d%s+conv2d_forward%s+fake%s+15%.0%s+[%d.]+%s+[%d.]+%%"),
        w .. " profile:\n" .. out)
      -- "~" marks a figure extrapolated from part of the run (a slow machine, a sanitizer build)
      assert.truthy(out:match("| " .. w .. " | fdm | fp32 | ~?[%d.]+ |"), w .. " missing:\n" .. out)
      assert.truthy(out:match("| " .. w .. " | fdm, bf16 autocast | bf16 | ~?[%d.]+ |"), w .. " bf16 missing:\n" .. out)
      assert.truthy(out:match("fdm%s+" .. w .. "%s+[%d.]+ img/s.-fake: [1-9]%d* allocations"), out)
      assert.truthy(out:match("fdm_bf16%s+" .. w .. "%s+[%d.]+ img/s.-fake: [1-9]%d* allocations"), out)
    end
    local f = assert(io.open(json))
    local s = f:read("a")
    f:close()
    os.remove(json)
    assert.truthy(s:find('"device": "fake"', 1, true), s)
    assert.truthy(s:find('"cfg_sample"', 1, true), s)
  end)

  it("says why and succeeds without a CUDA device", function()
    local out, rc = run("FDM_BENCH_DEVICE=cuda CUDA_VISIBLE_DEVICES= BENCH_TORCH=0")
    if not out:find("no CUDA device", 1, true) then return end   -- a machine with a GPU
    assert.truthy(out:find("nothing measured", 1, true), out)
    assert.are.equal(0, rc, out)
  end)
end)
