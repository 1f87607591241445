-- tests for fdm.classifier (lua/fdm/classifier.lua) and scripts/eval.lua:
-- the Jacobi eigen-solver, the Fréchet distance's invariants (zero on itself,
-- symmetric, a mean shift adds exactly |shift|^2), the shipped classifier's
-- test accuracy (first 2000 MNIST test images), and eval.lua --samples on
-- real test images. MNIST comes from fdm.data (fetched on first use).
local fdm = require "fdm"
local cls = require "fdm.classifier"
local H = require "helpers"

local BIN = os.getenv("FDM_BIN") or "build/fdm"
local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

-- a [N,d] float tensor of correlated, non-Gaussian features
local function features(n, d, seed)
  fdm.manual_seed(seed)
  local z = fdm.randn(n, d)
  local mix = fdm.randn(d, d) / math.sqrt(d)
  return fdm.relu(fdm.matmul(z, mix) + 0.3)
end

local function test_set()
  local ok, data = pcall(require, "fdm.data")
  if ok and data.ensure then data.ensure("mnist") end
  return cls.mnist("test")
end

describe("classifier.eigh (cyclic Jacobi)", function()
  it("diagonalises a symmetric matrix: A = V diag(w) V^T, V orthogonal", function()
    local n = 12
    local f = features(40, n, 3):tolist()
    local A = cls.stats(f).sigma
    local w, V = cls.eigh(A)
    local err, orth = 0, 0
    for i = 1, n do
      for j = 1, n do
        local s, o = 0, 0
        for k = 1, n do
          s = s + V[i][k] * w[k] * V[j][k]
          o = o + V[k][i] * V[k][j]
        end
        err = math.max(err, math.abs(s - A[i][j]))
        orth = math.max(orth, math.abs(o - (i == j and 1 or 0)))
      end
    end
    assert.is_true(err < 1e-12, "reconstruction error " .. err)
    assert.is_true(orth < 1e-12, "orthogonality error " .. orth)
  end)

  it("sqrtm_psd squares back to the matrix", function()
    local A = cls.stats(features(200, 10, 4)).sigma
    local R = cls.sqrtm_psd(A)
    local err = 0
    for i = 1, 10 do
      for j = 1, 10 do
        local s = 0
        for k = 1, 10 do s = s + R[i][k] * R[k][j] end
        err = math.max(err, math.abs(s - A[i][j]))
      end
    end
    assert.is_true(err < 1e-12, "sqrt^2 error " .. err)
  end)

  it("gets the eigenvalues of a known matrix", function()
    -- [[2,1],[1,2]] has eigenvalues 1 and 3
    local w = cls.eigh({ { 2, 1 }, { 1, 2 } })
    table.sort(w)
    assert.is_true(math.abs(w[1] - 1) < 1e-14 and math.abs(w[2] - 3) < 1e-14)
  end)
end)

describe("classifier.frechet", function()
  local d = 32
  local A = features(600, d, 1)
  local B = features(500, d, 2) * 1.3

  it("is ~0 for a feature set with itself", function()
    local fd = cls.frechet(A, A)
    assert.is_true(math.abs(fd) < 1e-6, "FD(A, A) = " .. fd)
  end)

  it("is symmetric", function()
    local ab, ba = cls.frechet(A, B), cls.frechet(B, A)
    assert.is_true(ab > 0.1, "FD(A, B) = " .. ab)
    assert.is_true(math.abs(ab - ba) < 1e-8 * ab, string.format("FD(A,B) %.12g vs FD(B,A) %.12g", ab, ba))
  end)

  it("grows with a mean shift by exactly |shift|^2", function()
    fdm.manual_seed(7)
    local shift = fdm.randn(d) * 0.5
    local sq = 0
    for _, v in ipairs(shift:tolist()) do sq = sq + v * v end
    -- shift the rows in double precision so the covariance stays the same
    local rows = A:tolist()
    local sl = shift:tolist()
    local shifted = {}
    for i = 1, #rows do
      local r = {}
      for j = 1, d do r[j] = rows[i][j] + sl[j] end
      shifted[i] = r
    end
    local fd, parts = cls.frechet(A, shifted)
    assert.is_true(math.abs(fd - sq) < 1e-6 * sq + 1e-7, string.format("FD %.10g vs |shift|^2 %.10g", fd, sq))
    assert.is_true(math.abs(parts.trace) < 1e-6, "covariance term " .. parts.trace)
    -- a shifted B too: FD(A, B + s) - FD(A, B) = |mu_B + s - mu_A|^2 - |mu_B - mu_A|^2
    local sa, sb = cls.stats(A), cls.stats(B)
    local sb2 = { mu = {}, sigma = sb.sigma }
    local expect = 0
    for j = 1, d do
      sb2.mu[j] = sb.mu[j] + sl[j]
      expect = expect + (sb2.mu[j] - sa.mu[j]) ^ 2 - (sb.mu[j] - sa.mu[j]) ^ 2
    end
    local got = cls.frechet(sa, sb2) - cls.frechet(sa, sb)
    assert.is_true(math.abs(got - expect) < 1e-8 * math.abs(expect) + 1e-9)
  end)

  it("of two Gaussians with known statistics matches the closed form", function()
    -- S1 = diag(a), S2 = diag(b): tr term = sum (sqrt a - sqrt b)^2
    local a, b = { 1, 4, 9 }, { 4, 1, 0.25 }
    local s1 = { mu = { 0, 0, 0 }, sigma = { { a[1], 0, 0 }, { 0, a[2], 0 }, { 0, 0, a[3] } } }
    local s2 = { mu = { 1, 0, 0 }, sigma = { { b[1], 0, 0 }, { 0, b[2], 0 }, { 0, 0, b[3] } } }
    local expect = 1
    for k = 1, 3 do expect = expect + (math.sqrt(a[k]) - math.sqrt(b[k])) ^ 2 end
    assert.is_true(math.abs(cls.frechet(s1, s2) - expect) < 1e-12)
  end)
end)

describe("the shipped MNIST classifier", function()
  local test = test_set()
  local sub = cls.head(test, 2000)
  local net = cls.load()

  it("loads and reads >= 99% of the first 2000 test images right", function()
    local acc, per = cls.accuracy(net, sub.images, sub.labels)
    assert.is_true(acc >= 0.99, "accuracy " .. acc)
    for d = 1, 10 do assert.is_true(per[d].n > 0 and per[d].acc >= 0.95, "digit " .. (d - 1) .. ": " .. per[d].acc) end
  end)

  it("gives 128-d features; two halves of the test set are close in FD, noise is far", function()
    local f = cls.features(net, sub.images)
    assert.same({ 2000, 128 }, f.shape)
    local near = cls.frechet(f:narrow(1, 1, 1000), f:narrow(1, 1001, 1000))
    fdm.manual_seed(0)
    local noise = cls.features(net, fdm.rand(500, 1, 28, 28))
    local far = cls.frechet(f:narrow(1, 1, 1000), noise)
    assert.is_true(near < far / 20, string.format("FD halves %.4f, FD noise %.4f", near, far))
  end)
end)

describe("scripts/eval.lua --samples", function()
  it("reads real test images as ~99% right with a small FD", function()
    local test = test_set()
    local sub = cls.head(test, 2000)
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. q(dir))
    local samples, png, json = dir .. "/s.safetensors", dir .. "/grid.png", dir .. "/r.json"
    fdm.io.save_safetensors(samples, { images = sub.images:contiguous(), labels = sub.labels:contiguous() })
    local cmd = table.concat({ q(BIN), "scripts/eval.lua", "--samples", q(samples), "--out", q(png),
      "--json", q(json), "2>&1" }, " ")
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    local ok = p:close()
    assert.is_true(ok, out)
    assert.truthy(out:find("all%s+2000"), out)
    local f = assert(io.open(json))
    local r = f:read("a")
    f:close()
    local acc = tonumber(r:match('"accuracy": ([%d%.]+)'))
    local fd = tonumber(r:match('"frechet": ([%-%d%.e]+)'))
    assert.is_true(acc >= 0.99, "accuracy " .. tostring(acc) .. "\n" .. out)
    -- The FD of a finite sample carries a bias of order tr(S)/N. Measured with
    -- the shipped classifier against the 10000 test images, N = 2000:
    -- test[1:2000] 15.3, test[8001:10000] 22.1, train[1:2000] 11.5; the same
    -- 2000 with N(0, 0.1) pixel noise 63, Gaussian-blurred (k5, sigma 1) 465,
    -- uniform noise 5614.
    assert.is_true(fd >= 0 and fd < 40, "FD " .. tostring(fd) .. "\n" .. out)
    local g = io.open(png, "rb")
    assert.truthy(g, "no grid written")
    assert.equal("\137PNG", g:read(4))
    g:close()
    os.execute("rm -rf " .. q(dir))
  end)
end)

describe("classifier.sample_flow_class and eval.lua --model", function()
  local unet = require "fdm.unet"

  it("follows the spec's CFG Euler sampler", function()
    fdm.manual_seed(5)
    local model = unet.ClassConditionalUNet(1, 8, 10)
    model:eval()
    local labels = fdm.tensor({ 3, 7, 0 }, { dtype = "int64" })
    local g, T = 5, 3
    local got = cls.sample_flow_class(model, labels, { cfg = g, steps = T, seed = 11, clamp = false, progress = false })
    -- by hand: x ~ N(0,I); x += (u_u + g (u_c - u_u)) / T at t = i/T
    fdm.manual_seed(11)
    local x = fdm.randn(3, 1, 28, 28)
    local c = fdm.F.one_hot(labels, 10):float()
    fdm.no_grad(function()
      for i = 0, T - 1 do
        local t = fdm.full({ 3, 1 }, i / T)
        local uc, uu = model(x, c, t), model(x, fdm.zeros(3, 10), t)
        x = x + (uu + (uc - uu) * g) / T
      end
    end)
    assert.same({ 3, 1, 28, 28 }, got.shape)
    local err = (got - x):abs():max():item()
    assert.is_true(err < 1e-4, "max difference " .. err)
    assert.is_false(model.training)
  end)

  it("eval.lua loads a checkpoint-style file (model. prefix, meta.hidden) and scores its samples", function()
    fdm.manual_seed(1)
    local model = unet.ClassConditionalUNet(1, 8, 10)
    local out = {}
    for k, v in pairs(model:state_dict()) do out["model." .. k] = v:contiguous() end
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. q(dir))
    local path = dir .. "/flow.safetensors"
    fdm.io.save_safetensors(path, out, { ["meta.hidden"] = "8", ["fdm.checkpoint"] = "1" })
    local cmd = table.concat({ q(BIN), "scripts/eval.lua", "--model", q(path),
      "--n", "20", "--steps", "2", "--ref-n", "500", "--baseline", "0", "--out", q(dir .. "/g.png"),
      "--json", q(dir .. "/r.json"), "--save", q(dir .. "/s.safetensors"), "2>&1" }, " ")
    local p = assert(io.popen(cmd))
    local text = p:read("a")
    assert.is_true(p:close(), text)
    assert.truthy(text:find("D=8", 1, true), text)
    local f = assert(io.open(dir .. "/r.json"))
    local r = f:read("a")
    f:close()
    assert.equal(20, tonumber(r:match('"n": (%d+)')))
    -- an untrained net draws noise: far from MNIST
    assert.is_true(tonumber(r:match('"frechet": ([%-%d%.e]+)')) > 100, r)
    local s = fdm.io.load_safetensors(dir .. "/s.safetensors")
    assert.same({ 20, 1, 28, 28 }, s.images.shape)
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, s.labels:tolist())
    os.execute("rm -rf " .. q(dir))
  end)

  local function run_eval(args)
    local p = assert(io.popen(q(BIN) .. " scripts/eval.lua " .. args .. " 2>&1"))
    local text = p:read("a")
    return text, p:close()
  end

  it("fdm.models loads each Part B kind, from its metadata or its tensors, and refuses others", function()
    local models = require "fdm.models"
    local W = require "fdm.weights"
    local dir = H.tmpdir()
    local cases = {
      { "denoiser", unet.UnconditionalUNet(1, 4), "UnconditionalUNet" },
      { "flow_time", unet.TimeConditionalUNet(1, 4), "TimeConditionalUNet" },
      { "flow_class", unet.ClassConditionalUNet(1, 4, 10), "ClassConditionalUNet" },
    }
    for _, c in ipairs(cases) do
      local sd = {}
      for k, v in pairs(c[2]:state_dict()) do sd[k] = v:contiguous() end
      local tagged, bare = dir .. "/" .. c[1] .. ".safetensors", dir .. "/" .. c[1] .. "_bare.safetensors"
      fdm.io.save_safetensors(tagged, sd, W.metadata(c[1], c[3], { hidden = 4 }))
      fdm.io.save_safetensors(bare, sd)
      for _, path in ipairs({ tagged, bare }) do
        local net, info = models.load(path)
        assert.equal(c[1], info.kind)
        assert.equal(4, info.hidden)
        assert.equal(c[2]:num_parameters(), net:num_parameters())
        assert.is_false(net.training)
      end
    end
    -- the kind asked for is enforced, by metadata and by tensors alike
    local text, ok = run_eval("--model " .. q(dir .. "/denoiser.safetensors") .. " --n 2 --sigmas 0.5")
    assert.is_true(ok, text)
    local ok2, err = pcall(models.load, dir .. "/denoiser_bare.safetensors", { kinds = { "flow_time" } })
    assert.is_false(ok2)
    assert.truthy(tostring(err):find("expected flow_time", 1, true), tostring(err))
    os.execute("rm -rf " .. q(dir))
  end)

  it("eval.lua --model DENOISER: MSE and PSNR per sigma, against the noisy input", function()
    local dir = H.tmpdir()
    local ev = require "fdm.denoiser_eval"
    -- an identity "denoiser" gives the noisy input's numbers exactly; a net
    -- that outputs zeros gives the images' mean square
    local images = fdm.rand(6, 1, 28, 28)
    local ident = setmetatable({ training = false }, { __call = function(_, z) return z end })
    function ident.eval() end
    function ident.train() end
    local rows = ev.measure(ident, { images = images, sigmas = { 0, 0.3 }, seed = 3, batch = 4 })
    assert.equal(0, rows[1].mse)
    assert.equal(rows[2].noisy_mse, rows[2].mse)
    assert.is_true(rows[2].mse > 0.01 and rows[2].mse < 0.09, tostring(rows[2].mse))
    local zero = setmetatable({ training = false }, { __call = function(_, z) return z * 0 end })
    zero.eval, zero.train = ident.eval, ident.train
    local r0 = ev.measure(zero, { images = images, sigmas = { 0.5 } })
    local want = images:square():mean():item()
    assert.is_true(math.abs(r0[1].mse - want) < 1e-6, r0[1].mse .. " vs " .. want)
    assert.is_true(math.abs(r0[1].psnr - 10 * math.log(1 / want, 10)) < 1e-4)
    -- through eval.lua on a saved (untrained) denoiser
    fdm.manual_seed(2)
    local W = require "fdm.weights"
    local net = unet.UnconditionalUNet(1, 4)
    fdm.io.save_safetensors(dir .. "/d.safetensors", net:state_dict(), W.metadata("denoiser", "UnconditionalUNet", { hidden = 4 }))
    local text, ok = run_eval("--model " .. q(dir .. "/d.safetensors") .. " --n 20 --sigmas 0,0.5 --json " .. q(dir .. "/r.json"))
    assert.is_true(ok, text)
    assert.truthy(text:find("20 images", 1, true), text)
    assert.truthy(text:find("PSNR", 1, true), text)
    local r = H.slurp(dir .. "/r.json")
    assert.equal(2, select(2, r:gsub('"sigma":', "")))
    assert.truthy(r:find('"noisy_mse": 0.00000000', 1, true), r)   -- sigma 0: the input is the image
    os.execute("rm -rf " .. q(dir))
  end)

  it("eval.lua --model FLOW_TIME: unconditional samples, the digits read and the FD", function()
    local dir = H.tmpdir()
    fdm.manual_seed(4)
    local W = require "fdm.weights"
    local net = unet.TimeConditionalUNet(1, 4)
    fdm.io.save_safetensors(dir .. "/t.safetensors", net:state_dict(), W.metadata("flow_time", "TimeConditionalUNet", { hidden = 4 }))
    local text, ok = run_eval("--model " .. q(dir .. "/t.safetensors") .. " --n 12 --steps 2 --ref-n 300 --baseline 0" ..
      " --out " .. q(dir .. "/g.png") .. " --json " .. q(dir .. "/r.json"))
    assert.is_true(ok, text)
    assert.truthy(text:find("read as", 1, true), text)
    assert.is_nil(text:find("accuracy", 1, true), text)
    local r = H.slurp(dir .. "/r.json")
    assert.truthy(r:find('"accuracy": null', 1, true), r)
    local total = 0
    for k in r:gmatch('"read_as": (%d+)') do total = total + tonumber(k) end
    assert.equal(12, total)
    assert.is_true(H.exists(dir .. "/g.png"))
    -- the sampler is the spec's Euler loop (eval mode: batch norm's running statistics)
    net:eval()
    local got = cls.sample_flow_time(net, 2, { steps = 3, seed = 9, clamp = false, progress = false })
    fdm.manual_seed(9)
    local x = fdm.randn(2, 1, 28, 28)
    fdm.no_grad(function()
      for i = 0, 2 do x = x + net(x, fdm.full({ 2, 1 }, i / 3)) / 3 end
    end)
    assert.is_true((got - x):abs():max():item() < 1e-5)
    os.execute("rm -rf " .. q(dir))
  end)
end)
