-- tests for tools/weights_half.lua: float32 tensors stored as float16, other
-- tensors and the metadata kept, the file still loads (fdm.models widens it
-- back to float32), values beyond float16's range refused.
local fdm = require "fdm"
local H = require "helpers"
local BIN = os.getenv("FDM_BIN") or "build/fdm"

describe("tools/weights_half.lua", function()
  local dir = H.tmpdir()
  local function run(a, b)
    return H.sh(BIN .. " tools/weights_half.lua " .. a .. " " .. b .. " 2>&1")
  end

  it("halves a Part B model file and it still loads, equal to its float16 rounding", function()
    local unet = require "fdm.unet"
    local W = require "fdm.weights"
    fdm.manual_seed(3)
    local net = unet.UnconditionalUNet(1, 4)
    local src, dst = dir .. "/d.safetensors", dir .. "/d16.safetensors"
    fdm.io.save_safetensors(src, net:state_dict(), W.metadata("denoiser", "UnconditionalUNet", { hidden = 4 }))
    local out, rc = run(src, dst)
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("stored as float16", 1, true), out)
    local t, meta = fdm.io.load_safetensors(dst)
    assert.are.equal("float16", meta["fdm.stored_dtype"])
    assert.are.equal("denoiser", meta["fdm.kind"])
    assert.are.equal("float16", t["in_block.net.0.net.0.weight"].dtype)
    assert.are.equal("int64", t["in_block.net.0.net.1.num_batches_tracked"].dtype)
    local loaded = require("fdm.models").load(dst)
    local want = net:state_dict()
    for k, v in pairs(loaded:state_dict()) do
      if v.dtype == "float32" then
        assert.are.equal("float32", v.dtype)
        H.assert_close(v, want[k]:to("float16"):float(), { atol = 0, rtol = 0 }, k)
      end
    end
    -- halved in place too
    local out2, rc2 = run(src, src)
    assert.are.equal(0, rc2, out2)
    assert.are.equal("float16", fdm.io.load_safetensors(src)["in_block.net.0.net.0.weight"].dtype)
  end)

  it("refuses values float16 cannot hold, and unreadable input, with clear errors", function()
    local big = dir .. "/big.safetensors"
    fdm.io.save_safetensors(big, { w = fdm.tensor({ 1, 70000 }) })
    local out, rc = run(big, dir .. "/x.safetensors")
    assert.are.equal(2, rc, out)
    assert.truthy(out:find("beyond float16's range", 1, true), out)
    assert.is_false(H.exists(dir .. "/x.safetensors"))
    H.writeall(dir .. "/junk.safetensors", "not a file")
    local out2, rc2 = run(dir .. "/junk.safetensors", dir .. "/y.safetensors")
    assert.are.equal(2, rc2, out2)
    assert.truthy(out2:find("cannot read", 1, true), out2)
  end)
end)
