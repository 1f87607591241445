-- Untrusted files and interrupted runs (issue 15): checkpoints are data
-- (JSON, checked field by field), never code; IDX gzip decompression stops
-- at the size the header declares; a run locks its folder and removes the
-- temporaries a killed run left; safetensors metadata keeps NUL-free exact
-- strings, the data section has no gaps, files are byte-reproducible.
local fdm = require "fdm"
local H = require "helpers"
local raises = H.raises
local tmpdir, readall, writeall, exists = H.tmpdir, H.readall, H.writeall, H.exists
local ckpt = require "fdm.checkpoint"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
-- an address-space limit for child processes (not under ASan, which
-- reserves terabytes of shadow memory; there the time limits remain)
local ULIMIT = (os.getenv("LD_PRELOAD") or ""):find("asan") and "" or "ulimit -v 1500000; "

-- runs a shell command; returns its output, its exit status (true/false), seconds taken
local function sh(cmd)
  local t0 = fdm.time()
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true, fdm.time() - t0
end

-- a small training state: a linear model, Adam, ExponentialLR
local function state()
  fdm.manual_seed(3)
  local net = fdm.nn.Linear(3, 2)
  local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-2 })
  local x = fdm.randn(4, 3)
  local loss = net(x):square():mean()
  opt:zero_grad(); loss:backward(); opt:step()
  local sched = fdm.optim.ExponentialLR(opt, 0.5)
  sched:step()
  return net, opt, sched
end

-- a valid checkpoint at path; returns its tensors and metadata
local function make_ckpt(path)
  local net, opt, sched = state()
  ckpt.save(path, { model = net, optimizer = opt, scheduler = sched, epoch = 2,
                    history = { loss = { 0.5, 0.25 } }, meta = { script = "t", hidden = 4 } })
  return fdm.io.load_safetensors(path)
end

-- rewrites the checkpoint at path with metadata fields replaced
local function tamper(path, fields)
  local t, m = fdm.io.load_safetensors(path)
  for k, v in pairs(fields) do m[k] = v end
  fdm.io.save_safetensors(path, t, m)
end

local function load_into(path)
  local net, opt, sched = state()
  return ckpt.load(path, { model = net, optimizer = opt, scheduler = sched })
end

describe("fdm.json", function()
  local json = require "fdm.json"
  it("round-trips numbers exactly, keeps integer/float, sorts keys", function()
    local v = { b = { 1, 2.0, 0.1, -1e-300, math.maxinteger, math.mininteger }, a = "x\0y\"\\\n\1é", c = true, d = {} }
    local s = json.encode(v)
    assert.equal(s, json.encode(json.decode(s)))
    local w = json.decode(s)
    assert.equal(math.maxinteger, w.b[5]); assert.equal("integer", math.type(w.b[1]))
    assert.equal("float", math.type(w.b[2])); assert.equal(0.1, w.b[3]); assert.equal(v.a, w.a)
    assert.truthy(s:find('^{"a":'))
  end)
  it("refuses what is not strict JSON data", function()
    for _, bad in ipairs({ "(function() while true do end end)()", '#("x"):rep(1<<30) and {}',
        "{a=1}", "[1,]", "{\"a\":1,\"a\":2}", "NaN", "1e999", "01", "[1] x", "\"\1\"",
        "99999999999999999999", string.rep("[", 40) .. string.rep("]", 40), "\"\\ud800\"", "" }) do
      local ok = pcall(json.decode, bad)
      assert(not ok, "accepted " .. bad:sub(1, 40))
    end
    assert.has_error(function() json.decode(string.rep(" ", 2 << 20) .. "1") end)
    assert.has_error(function() json.encode({ 0 / 0 }) end)
    assert.has_error(function() json.encode({ 1, x = 2 }) end)
  end)
  it("reads integers beyond int64 as floats only when asked (Hugging Face configs)", function()
    local s = '{"model_max_length": 1000000000000000019884624838656}'
    assert.has_error(function() json.decode(s) end)
    local v = json.decode(s, { big_integers = "float" })
    assert.equal("float", math.type(v.model_max_length))
    assert.equal(1e30, v.model_max_length)
    assert.equal("integer", math.type(json.decode("[7]", { big_integers = "float" })[1]))
  end)
end)

describe("checkpoints are data", function()
  local d
  before_each(function() d = tmpdir() end)
  after_each(function() os.execute("rm -rf " .. q(d)) end)

  it("save/load round trip", function()
    local p = d .. "/c.safetensors"
    local _, m = make_ckpt(p)
    assert.equal("2", m["fdm.checkpoint"])
    local st = load_into(p)
    assert.equal(2, st.epoch); assert.same({ 0.5, 0.25 }, st.history.loss)
    assert.same({ script = "t", hidden = 4 }, st.meta)
  end)

  -- the attack: Lua code in the fields; runs in a child process with a time
  -- and memory limit, so the unfixed loader (which ran it) fails the test
  -- instead of hanging it
  for _, case in ipairs({
    { "an endless loop", "(function() while true do end end)()" },
    { "a 1 GiB string", '#("x"):rep(1<<30) and {}' },
  }) do
    for _, field in ipairs({ "meta", "scheduler", "rng" }) do
      it(field .. " holding " .. case[1] .. " is refused, not run (also as version 1)", function()
        local p = d .. "/c.safetensors"
        make_ckpt(p)
        for _, version in ipairs({ "2", "1" }) do
          tamper(p, { [field] = case[2], ["fdm.checkpoint"] = version })
          local script = d .. "/load.lua"
          writeall(script, ([[
            package.path = %q
            local ckpt = require "fdm.checkpoint"
            local net = fdm.nn.Linear(3, 2)
            local opt = fdm.optim.Adam(net:parameters(), { lr = 1e-2 })
            local sched = fdm.optim.ExponentialLR(opt, 0.5)
            local ok, err = pcall(ckpt.load, %q, { model = net, optimizer = opt, scheduler = sched })
            print(ok and "LOADED" or ("REFUSED: " .. tostring(err)))
          ]]):format(package.path, p))
          local out, _, secs = sh(ULIMIT .. "timeout 20 " .. q(BIN) .. " " .. q(script))
          assert.truthy(out:find("REFUSED", 1, true), "v" .. version .. ": " .. out)
          assert(secs < 15, "took " .. secs .. " s")
          if version == "2" then
            assert.truthy(out:find("field '" .. field .. "'", 1, true), out)
            assert.truthy(out:find("JSON", 1, true), out)
          else
            assert.truthy(out:find("version 1", 1, true), out)
          end
        end
      end)
    end
  end

  it("--resume of a script refuses a checkpoint with code in it (the attack, end to end)", function()
    local out1, ok1 = sh("FDM_FAKE_DATA=1 timeout 120 " .. q(BIN) .. " scripts/flow_time.lua --hidden 4 --subset 64 " ..
      "--epochs 2 --stop-after 1 --batch 64 --steps 2 --out " .. q(d) .. " </dev/null")
    assert(ok1, out1)
    tamper(d .. "/checkpoint.safetensors", { meta = "(function() while true do end end)()" })
    local out, ok, secs = sh("FDM_FAKE_DATA=1 timeout 60 " .. q(BIN) .. " scripts/flow_time.lua --hidden 4 --subset 64 " ..
      "--epochs 2 --batch 64 --steps 2 --resume --out " .. q(d) .. " </dev/null")
    assert.is_false(ok)
    assert(secs < 50, "took " .. secs .. " s")
    assert.truthy(out:find("field 'meta'", 1, true), out)
    assert.falsy(out:find("traceback", 1, true), out)
  end)

  it("each field is checked, with an error naming it, before anything is restored", function()
    local p = d .. "/c.safetensors"
    local cases = {
      { { epoch = "-7" }, "field 'epoch'", "-7" },
      { { epoch = "abc" }, "field 'epoch'", "abc" },
      { { epoch = "1e3" }, "field 'epoch'" },
      { { rng = '{"seed":1}' }, "field 'rng.offset'" },
      { { rng = '{"seed":1.5,"offset":0}' }, "field 'rng.seed'" },
      { { rng = '[1,2]' }, "field 'rng'" },
      { { meta = '[1]' }, "field 'meta'", "object" },
      { { meta = '{"a":NaN}' }, "field 'meta'", "JSON" },
      { { ["optim.param_groups.0.lr"] = "nan" }, "field 'optim.param_groups.0.lr'" },
      { { ["optim.param_groups.0.lr"] = "-1" }, "field 'optim.param_groups.0.lr'" },
      { { ["optim.state.0.step"] = "-3" }, "field 'optim.state.0.step'" },
      { { ["fdm.checkpoint"] = "3" }, "field 'fdm.checkpoint'" },
      { { ["scheduler.name"] = "StepLR" }, "field 'scheduler.name'" },
    }
    local function sched_with(k, v)
      local net, opt, sched = state()
      local sd = sched:state_dict()
      sd[k] = v
      return require("fdm.json").encode(sd)
    end
    local json_sched = {
      { "gamma", -0.5, "field 'scheduler.gamma'" }, { "gamma", 0, "field 'scheduler.gamma'" },
      { "last_epoch", 1.5, "field 'scheduler.last_epoch'" }, { "last_epoch", -9, "field 'scheduler.last_epoch'" },
      { "base_lrs", { 0.1, 0.2 }, "field 'scheduler.base_lrs'" }, { "base_lrs", "x", "field 'scheduler.base_lrs'" },
      { "extra", 1, "unknown entry 'extra'" },
    }
    for _, c in ipairs(json_sched) do cases[#cases + 1] = { { scheduler = sched_with(c[1], c[2]) }, c[3] } end
    cases[#cases + 1] = { { scheduler = '{"gamma":1e999}' }, "field 'scheduler'", "JSON" }
    for _, c in ipairs(cases) do
      make_ckpt(p)
      tamper(p, c[1])
      local net, opt, sched = state()
      local before = net.weight:clone()
      local lr = opt.param_groups[1].lr
      raises(function() ckpt.load(p, { model = net, optimizer = opt, scheduler = sched }) end,
        "checkpoint.load", table.unpack(c, 2))
      assert.equal(0, (net.weight - before):abs():max():item())
      assert.equal(lr, opt.param_groups[1].lr)
    end
    -- optimizer moments of the wrong shape
    make_ckpt(p)
    local t, m = fdm.io.load_safetensors(p)
    t["optim.state.0.exp_avg"] = fdm.zeros(5)
    fdm.io.save_safetensors(p, t, m)
    raises(function() load_into(p) end, "field 'optim.state.0.exp_avg'", "shape")
  end)
end)

describe("IDX gzip bomb", function()
  it("decompression stops at the size the header declares", function()
    local d = tmpdir()
    local raw = d .. "/bomb.idx"
    -- header: uint8, 1 dim of 10 elements; then 64 MiB of zeros
    local f = assert(io.open(raw, "wb"))
    f:write("\0\0\8\1\0\0\0\10")
    local z = string.rep("\0", 1 << 20)
    for _ = 1, 64 do f:write(z) end
    f:close()
    assert(os.execute("gzip -1 -f " .. q(raw)))
    local script = d .. "/read.lua"
    writeall(script, ("local ok, err = pcall(fdm.io.read_idx, %q) print(ok and 'READ' or ('REFUSED: ' .. err))"):format(raw .. ".gz"))
    -- a 48 MiB address-space margin above what fdm itself needs would not fit 64 MiB
    local base = sh(ULIMIT .. q(BIN) .. " -e 'print(1)'")
    assert.truthy(base:find("1"))
    local out, _, secs = sh(ULIMIT .. "timeout 20 " .. q(BIN) .. " " .. q(script))
    assert.truthy(out:find("REFUSED", 1, true), out)
    assert.truthy(out:find("10 data bytes", 1, true) or out:find("declares", 1, true), out)
    assert(secs < 2, "took " .. secs .. " s")
    -- the peak: reading a 1 MiB gz inflating to 64 MiB must not allocate 64 MiB
    local kb = H.peak_rss_kb(BIN, script)
    local base_kb = H.peak_rss_kb(BIN)
    assert(kb and base_kb and kb - base_kb < 32 * 1024, "peak RSS grew by " .. tostring(kb and base_kb and kb - base_kb) .. " KiB")
    -- good files still read, plain and gzip'ed (several members too)
    local ok = d .. "/ok.idx"
    writeall(ok, "\0\0\8\2\0\0\0\2\0\0\0\3" .. "\1\2\3\4\5\6")
    assert.same({ { 1, 2, 3 }, { 4, 5, 6 } }, fdm.io.read_idx(ok):tolist())
    assert(os.execute("gzip -k -f " .. q(ok)))
    assert.same({ { 1, 2, 3 }, { 4, 5, 6 } }, fdm.io.read_idx(ok .. ".gz"):tolist())
    -- truncated data and trailing data are still errors
    writeall(d .. "/short", "\0\0\8\1\0\0\0\10" .. "\1\2")
    assert(os.execute("gzip -f " .. q(d .. "/short")))
    raises(function() fdm.io.read_idx(d .. "/short.gz") end, "read_idx", "truncated")
    os.execute("rm -rf " .. q(d))
  end)
end)

describe("run folders", function()
  local runfolder = require "fdm.runfolder"

  it("a second run on the same folder stops, naming the holder's PID; a killed run's lock does not block", function()
    local d = tmpdir()
    local script = d .. "/hold.lua"
    writeall(script, ([[
      package.path = %q
      require("fdm.runfolder").acquire(%q)
      os.execute("sleep 30")
    ]]):format(package.path, d))
    local p = assert(io.popen(q(BIN) .. " " .. q(script) .. " >/dev/null 2>&1 & echo $!"))
    local pid = p:read("l")
    local t0 = fdm.time()
    while not exists(d .. "/.fdm-lock") or readall(d .. "/.fdm-lock") == "" do
      assert(fdm.time() - t0 < 20, "the holder did not start")
      os.execute("sleep 0.1")
    end
    local err = raises(function() runfolder.acquire(d) end, d, "in use by another run", "process " .. pid)
    -- the same through a script: a clear message, no traceback
    local out, ok = sh("FDM_FAKE_DATA=1 " .. q(BIN) .. " scripts/flow_time.lua --hidden 4 --subset 64 --epochs 1 " ..
      "--batch 64 --steps 2 --out " .. q(d) .. " </dev/null")
    assert.is_false(ok)
    assert.truthy(out:find("process " .. pid, 1, true), out)
    assert.falsy(out:find("traceback", 1, true), out)
    assert.is_false(exists(d .. "/checkpoint.safetensors"))
    -- kill -9: the lock file stays, the lock goes
    os.execute("kill -9 " .. pid)
    p:close()
    os.execute("sleep 0.3")
    assert.is_true(exists(d .. "/.fdm-lock"))
    runfolder.acquire(d)
    assert.is_true(runfolder.holds(d))
    runfolder.acquire(d)   -- again in the same process: fine
    runfolder.release(d)
    assert.truthy(err)
    os.execute("rm -rf " .. q(d))
  end)

  it("a run removes the temporaries a killed run left, and only those", function()
    local d = tmpdir()
    for _, n in ipairs({ "checkpoint.safetensors.tmp.Ab12Cd", "loss.png.tmp.zzzzzz", "samples.png.tmp.000000" }) do
      writeall(d .. "/" .. n, string.rep("x", 1000))
    end
    for _, n in ipairs({ "notes.tmp.txt", "keep.tmp.abc", "model.safetensors" }) do writeall(d .. "/" .. n, "keep") end
    local out, ok = sh("FDM_FAKE_DATA=1 " .. q(BIN) .. " scripts/flow_time.lua --hidden 4 --subset 64 --epochs 1 " ..
      "--batch 64 --steps 2 --out " .. q(d) .. " </dev/null")
    assert(ok, out)
    local left = sh("ls -a " .. q(d))
    assert.falsy(left:find(".tmp.Ab12Cd", 1, true), left)
    assert.falsy(left:find(".tmp.zzzzzz", 1, true), left)
    assert.falsy(left:find(".tmp.000000", 1, true), left)
    assert.truthy(left:find("notes.tmp.txt", 1, true), left)
    assert.truthy(left:find("keep.tmp.abc", 1, true), left)
    os.execute("rm -rf " .. q(d))
  end)
end)

describe("safetensors", function()
  local d
  before_each(function() d = tmpdir() end)
  after_each(function() os.execute("rm -rf " .. q(d)) end)

  it("metadata with NUL bytes is refused when writing, not cut", function()
    local p = d .. "/a.safetensors"
    raises(function() fdm.io.save_safetensors(p, { x = fdm.ones(1) }, { ["k\0a"] = "1", ["k\0b"] = "2" }) end,
      "save_safetensors", "NUL")
    raises(function() fdm.io.save_safetensors(p, { x = fdm.ones(1) }, { k = "a\0b" }) end, "save_safetensors", "NUL")
    raises(function() fdm.io.save_safetensors(p, { ["x\0y"] = fdm.ones(1) }) end, "save_safetensors", "NUL")
    assert.is_false(exists(p))
  end)

  local function file_with(header, data)
    local n = #header
    return string.pack("<I8", n) .. header .. data
  end

  it("gaps and trailing bytes in the data section are refused", function()
    local p = d .. "/b.safetensors"
    writeall(p, file_with('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', "\1\2"))
    assert.same({ 1, 2 }, fdm.io.load_safetensors(p).a:tolist())
    writeall(p, file_with('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', "\1\2\3"))
    raises(function() fdm.io.load_safetensors(p) end, "load_safetensors", "trailing")
    writeall(p, file_with('{"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', "\0\1\2"))
    raises(function() fdm.io.load_safetensors(p) end, "load_safetensors", "gap")
    writeall(p, file_with('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}', "\1\0\2"))
    raises(function() fdm.io.load_safetensors(p) end, "load_safetensors", "gap")
  end)

  it("identical content gives identical files (metadata keys sorted)", function()
    local t = { w = fdm.arange(6):float(), b = fdm.ones(2) }
    local m1, m2 = {}, {}
    local keys = {}
    for i = 1, 40 do keys[i] = "key" .. i end
    for i = 1, 40 do m1[keys[i]] = tostring(i) end
    for i = 40, 1, -1 do m2[keys[i]] = tostring(i) end
    for i = 1, 40, 2 do m2[keys[i]] = nil end
    for i = 1, 40, 2 do m2[keys[i]] = tostring(i) end
    fdm.io.save_safetensors(d .. "/1.safetensors", t, m1)
    fdm.io.save_safetensors(d .. "/2.safetensors", t, m2)
    local a, b = readall(d .. "/1.safetensors"), readall(d .. "/2.safetensors")
    assert.equal(a, b)
    local hdr = a:sub(9, 8 + string.unpack("<I8", a))
    assert.truthy(hdr:find('"key1":"1","key10":"10","key11"', 1, true), hdr)
  end)
end)

describe("PNG memory", function()
  -- a 16-bit RGBA PNG written by python3's zlib (fdm itself writes 8 bits)
  local function png16(path, w, h, fill)
    local py = ([[
import struct, zlib
w, h = %d, %d
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
rows = []
for y in range(h):
    px = b"".join(struct.pack(">4H", *(%s)) for x in range(w)) if %s else bytes(8 * w)
    rows.append(b"\0" + px)
raw = zlib.compress(b"".join(rows), 1)
open(%q, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
]]):format(w, h, fill or "0,0,0,0", fill and "True" or "False", path)
    local f = assert(io.popen("python3 - 2>&1", "w"))
    f:write(py)
    assert(f:close())
  end

  it("16-bit RGBA decodes row by row: no 8-bit copy of the whole image next to the tensor", function()
    local d = tmpdir()
    local small = d .. "/s.png"
    png16(small, 3, 2, "x * 30000, y * 65535, 257 * 7, 65535")
    local t = fdm.io.read_png(small, { range = "byte" })
    assert.same({ 4, 2, 3 }, t.shape)
    assert.same({ { 0, 117, 233 }, { 0, 117, 233 } }, t[1]:tolist())
    assert.same({ { 0, 0, 0 }, { 255, 255, 255 } }, t[2]:tolist())
    assert.same({ { 7, 7, 7 }, { 7, 7, 7 } }, t[3]:tolist())
    assert.equal(1, fdm.io.read_png(small)[4][1][1]:item())
    -- 4096 x 4096 RGBA: the uint8 tensor is 64 MiB; the old decoder held
    -- another 64 MiB (the interleaved image) while converting
    local big = d .. "/b.png"
    png16(big, 4096, 4096)
    local script = d .. "/r.lua"
    writeall(script, ("local t = fdm.io.read_png(%q, { range = 'byte' }) assert(t.shape[3] == 4096)"):format(big))
    local base = H.peak_rss_kb(BIN)
    local kb = H.peak_rss_kb(BIN, script)
    assert(kb - base < 96 * 1024, string.format("peak RSS grew by %d MiB for a 64 MiB tensor", (kb - base) // 1024))
    os.execute("rm -rf " .. q(d))
  end)
end)
