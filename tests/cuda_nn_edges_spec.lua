-- tests/cuda_nn_edges_spec.lua: tests/cuda/nn_edges.lua (the NN kernels' rarer
-- paths, GPU against CPU) tested where there is no GPU: against the fake
-- device every case passes, a device missing a kernel is caught, and asked
-- for "cuda" without a CUDA device it skips cleanly.
local BIN = os.getenv("FDM_BIN") or "build/fdm"
local FAKE = os.getenv("FDM_FAKE_BACKEND")

local function run(env)
  local p = io.popen(env .. " " .. BIN .. " tests/cuda/nn_edges.lua 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

describe("NN edge cases of the GPU kernels", function()
  it("pass against the fake device", function()
    assert.truthy(FAKE and FAKE ~= "", "FDM_FAKE_BACKEND is not set (make test builds it)")
    local out, rc = run("FDM_EDGES_DEVICE=fake FDM_FAKE_BACKEND=" .. FAKE)
    local passed, failed = out:match("nn_edges on fake: (%d+) passed, (%d+) failed")
    assert.truthy(passed, out)
    assert.are.equal("0", failed, out)
    assert.is_true(tonumber(passed) >= 60, out)
    assert.are.equal(0, rc, out)
  end)

  it("catch a device without a kernel", function()
    local out, rc = run("FDM_EDGES_DEVICE=fake FDM_FAKE_WITHOUT=conv_transpose2d_forward FDM_FAKE_BACKEND=" .. FAKE)
    assert.truthy(out:find("FAIL conv_transpose2d", 1, true), out)
    assert.are.equal(1, rc, out)
  end)

  it("skip without a CUDA device", function()
    local out, rc = run("FDM_EDGES_DEVICE=cuda CUDA_VISIBLE_DEVICES=")
    if out:find("nn_edges on cuda", 1, true) then return end   -- a machine with a GPU ran them
    assert.truthy(out:find("skipped", 1, true), out)
    assert.are.equal(0, rc, out)
  end)
end)
