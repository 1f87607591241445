-- tests/cuda_parity_spec.lua: the GPU parity suite (tests/cuda/parity.lua,
-- `make test-cuda`) tested here, where there is no GPU: run by fdm against the
-- fake device (CPU kernels over memory of its own) every case must pass, and
-- asked for "cuda" without a CUDA device it must say so and skip cleanly.
local fdm = require "fdm"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local FAKE = os.getenv("FDM_FAKE_BACKEND")

-- runs a GPU check script (default the parity suite) with env: its output and exit status
local function run(env, script)
  local p = io.popen(env .. " " .. BIN .. " " .. (script or "tests/cuda/parity.lua") .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

describe("GPU parity suite", function()
  it("passes every case against the fake device", function()
    assert.truthy(FAKE and FAKE ~= "", "FDM_FAKE_BACKEND is not set (make test builds it)")
    local out, rc = run("FDM_PARITY_DEVICE=fake FDM_PARITY_QUICK=1 FDM_FAKE_BACKEND=" .. FAKE)
    local passed, failed = out:match("parity fake vs cpu: (%d+) passed, (%d+) failed")
    assert.truthy(passed, out)
    assert.are.equal("0", failed, out)
    assert.is_true(tonumber(passed) >= 250, "only " .. passed .. " cases ran:\n" .. out)
    assert.are.equal(0, rc, out)
  end)

  it("sees a device that computes differently", function()
    -- without the gemm kernel on the fake device every matmul case must fail
    local out, rc = run("FDM_PARITY_DEVICE=fake FDM_PARITY_FILTER=matmul FDM_FAKE_WITHOUT=gemm FDM_FAKE_BACKEND=" .. FAKE)
    assert.truthy(out:find("FAIL matmul", 1, true), out)
    assert.truthy(out:find("not implemented on device 'fake'", 1, true), out)
    assert.are.equal(1, rc, out)
  end)

  it("without a CUDA device says so and skips", function()
    local has_cuda = false
    for _, d in ipairs(fdm.devices()) do if d == "cuda" then has_cuda = true end end
    local out, rc = run("FDM_PARITY_DEVICE=cuda FDM_PARITY_FILTER=^add$")
    if has_cuda then
      assert.truthy(out:find("parity cuda vs cpu", 1, true), out)
    else
      assert.truthy(out:find("^no CUDA device: skipped %(") , out)
      assert.are.equal(0, rc, out)
      -- a built plugin must load (no undefined symbol) and say why there is no GPU
      local so = (os.getenv("FDM_BUILD") or "build") .. "/lua/fdm/fdm_backend_cuda.so"
      local f = io.open(so, "rb")
      if f then
        f:close()
        assert.truthy(out:find("no CUDA device: cudaGetDeviceCount failed", 1, true) or
          out:find("no CUDA device: the driver reports none", 1, true), out)
      end
    end
  end)

  it("a script given --device cuda without a CUDA device says why and exits 2", function()
    for _, d in ipairs(fdm.devices()) do if d == "cuda" then return end end
    local p = io.popen(BIN .. " scripts/flow_time.lua --device cuda 2>&1; echo \"rc=$?\"")
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("flow_time: --device cuda: device 'cuda' is not available", 1, true), out)
    assert.truthy(out:find("rc=2", 1, true), out)
    assert.falsy(out:find("traceback", 1, true), out)
  end)

  it("the CUDA plugin, when built, defines a kernel for every slot of the table", function()
    local so = (os.getenv("FDM_BUILD") or "build") .. "/lua/fdm/fdm_backend_cuda.so"
    local f = io.open(so, "rb")
    if not f then return end   -- built only where the toolkit is (mk/cuda.mk)
    f:close()
    local p = io.popen("nm " .. so .. " 2>/dev/null")
    local syms = p:read("a")
    p:close()
    local missing = {}
    for _, k in ipairs(fdm.supports("cpu")) do
      if not syms:find(" [tT] cuda_kernel_" .. k .. "\n") then missing[#missing + 1] = k end
    end
    assert.are.equal("", table.concat(missing, ", "), "slots without a CUDA kernel (NULL on the device)")
    assert.falsy(syms:find(" [wU] cuda_kernel_"), "an unresolved kernel symbol")
    assert.truthy(syms:find(" T fdm_backend_plugin_register\n"), "no plugin entry")
  end)
end)

describe("GPU DeepFloyd check (tests/cuda/deepfloyd.lua)", function()
  it("passes every case against the fake device, and skips without a CUDA device", function()
    assert.truthy(FAKE and FAKE ~= "", "FDM_FAKE_BACKEND is not set (make test builds it)")
    local out, rc = run("FDM_IF_DEVICE=fake FDM_FAKE_BACKEND=" .. FAKE, "tests/cuda/deepfloyd.lua")
    assert.truthy(out:find("deepfloyd on fake: 4 passed, 0 failed", 1, true), out)
    assert.are.equal(0, rc, out)
    local has_cuda = false
    for _, d in ipairs(fdm.devices()) do if d == "cuda" then has_cuda = true end end
    if not has_cuda then
      out, rc = run("FDM_IF_DEVICE=cuda", "tests/cuda/deepfloyd.lua")
      assert.truthy(out:find("^no CUDA device: skipped %("), out)
      assert.are.equal(0, rc, out)
    end
  end)
end)
