-- tests for fdm.nn: parameter counts, names and order as in PyTorch, default
-- initialisation, modes, state dicts, repr, and two small nets against
-- PyTorch golden values (tests/golden/nn_net*.safetensors, tools/gen_nn_golden.py).
local fdm = require "fdm"
local H = require "helpers"
local nn = fdm.nn
local F = fdm.F

local function keys_of(m)
  local out = {}
  for i, e in ipairs(m:named_parameters()) do out[i] = e[1] end
  return out
end

local function stats(t)
  local v = H.flat(t)
  local lo, hi, sum, sq = math.huge, -math.huge, 0, 0
  for _, x in ipairs(v) do
    lo, hi, sum, sq = math.min(lo, x), math.max(hi, x), sum + x, sq + x * x
  end
  local n = #v
  local mean = sum / n
  return { min = lo, max = hi, mean = mean, var = sq / n - mean * mean, n = n }
end

describe("nn parameter counts (as PyTorch)", function()
  local cases = {
    { "Conv2d(1,64,3)", function() return nn.Conv2d(1, 64, 3) end, 640 },
    { "Conv2d(64,128,3,groups=4)", function() return nn.Conv2d(64, 128, 3, { groups = 4 }) end, 18560 },
    { "Conv2d(3,8,{3,5},bias=false)", function() return nn.Conv2d(3, 8, { 3, 5 }, { bias = false }) end, 360 },
    { "ConvTranspose2d(64,32,4,stride=2)", function() return nn.ConvTranspose2d(64, 32, 4, { stride = 2 }) end, 32800 },
    { "ConvTranspose2d(8,16,3,groups=2)", function() return nn.ConvTranspose2d(8, 16, 3, { groups = 2 }) end, 592 },
    { "Linear(10,5)", function() return nn.Linear(10, 5) end, 55 },
    { "Linear(10,5,bias=false)", function() return nn.Linear(10, 5, { bias = false }) end, 50 },
    { "BatchNorm2d(64)", function() return nn.BatchNorm2d(64) end, 128 },
    { "BatchNorm2d(64,affine=false)", function() return nn.BatchNorm2d(64, { affine = false }) end, 0 },
    { "GroupNorm(8,64)", function() return nn.GroupNorm(8, 64) end, 128 },
    { "LayerNorm(10)", function() return nn.LayerNorm(10) end, 20 },
    { "LayerNorm({4,5})", function() return nn.LayerNorm({ 4, 5 }) end, 40 },
    { "GELU", function() return nn.GELU() end, 0 },
    -- torchvision-style small CNN: sum(p.numel() for p in m.parameters())
    { "MNIST CNN", function()
      return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(128, 10))
    end, 1199882 },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      assert.are.equal(c[3], c[2]():num_parameters())
    end)
  end

  it("weight shapes", function()
    assert.are.same({ 64, 1, 3, 3 }, nn.Conv2d(1, 64, 3).weight.shape)
    assert.are.same({ 64, 8, 4, 4 }, nn.ConvTranspose2d(64, 16, 4, { groups = 2 }).weight.shape)
    assert.are.same({ 5, 10 }, nn.Linear(10, 5).weight.shape)
    assert.is_nil(nn.Linear(10, 5, { bias = false }).bias)
    assert.are.same({}, nn.BatchNorm2d(3).num_batches_tracked.shape)
    assert.are.equal("int64", nn.BatchNorm2d(3).num_batches_tracked.dtype)
  end)

  it("parameters require grad and are leaves", function()
    for _, p in ipairs(nn.Conv2d(2, 3, 3):parameters()) do
      assert.is_true(p.requires_grad)
      assert.is_true(p.is_leaf)
    end
    assert.is_false(nn.BatchNorm2d(3).running_mean.requires_grad)
  end)
end)

describe("nn names and state_dict order", function()
  it("nested Sequential matches PyTorch's state_dict keys", function()
    local net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
      nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), nn.Linear(4, 2, { bias = false }))
    -- list(torch.nn.Sequential(...same...).state_dict().keys())
    local expected = { "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
      "1.num_batches_tracked", "3.0.weight", "3.0.bias", "3.1.weight", "3.1.bias", "4.weight" }
    local sd, keys = net:state_dict()
    assert.are.same(expected, keys)
    assert.are.same(expected, net:state_dict_keys())
    for _, k in ipairs(expected) do assert.is_not_nil(sd[k], k) end
    assert.are.same({ "0.weight", "0.bias", "1.weight", "1.bias", "3.0.weight", "3.0.bias", "3.1.weight",
      "3.1.bias", "4.weight" }, keys_of(net))
    local bn = {}
    for i, e in ipairs(net:named_buffers()) do bn[i] = e[1] end
    assert.are.same({ "1.running_mean", "1.running_var", "1.num_batches_tracked" }, bn)
  end)

  it("user modules register children and parameters in assignment order", function()
    local Block = nn.Module:extend("Block")
    function Block:init(c)
      self.conv = nn.Conv2d(c, c, 3, { padding = 1 })
      self.norm = nn.GroupNorm(1, c)
    end
    function Block:forward(x) return F.silu(self.norm(self.conv(x))) end
    local Net = nn.Module:extend("Net")
    function Net:init()
      self.scale = nn.Parameter(fdm.ones(1))
      self.down1 = Block(4)
      self.head = nn.Linear(4, 2)
      self.down2 = Block(4)
      self:register_buffer("steps", fdm.zeros(1))
      self.plain = 42
    end
    function Net:forward(x) return self.down2(self.down1(x)) * self.scale end
    local net = Net()
    assert.are.same({ "scale", "down1.conv.weight", "down1.conv.bias", "down1.norm.weight",
      "down1.norm.bias", "head.weight", "head.bias", "down2.conv.weight", "down2.conv.bias",
      "down2.norm.weight", "down2.norm.bias" }, keys_of(net))
    local _, keys = net:state_dict()
    assert.are.same("steps", keys[2])
    assert.are.equal(42, net.plain)
    assert.is_true(net:is_a(Net))
    assert.is_true(net:is_a(nn.Module))
    assert.is_false(net:is_a(Block))
    local y = net(fdm.randn(1, 4, 5, 5))
    assert.are.same({ 1, 4, 5, 5 }, y.shape)
    -- reassigning a registered parameter keeps its slot
    net.scale = nn.Parameter(fdm.full({ 1 }, 2))
    assert.are.equal("scale", keys_of(net)[1])
    assert.are.equal(2, net.scale:item())
    assert.are.equal(1 + 2 * (4 * 4 * 9 + 4 + 4 + 4) + 10, net:num_parameters())
  end)

  it("shared parameters are listed once", function()
    local l = nn.Linear(3, 3)
    local net = nn.Sequential(l, nn.ReLU(), l)
    assert.are.same({ "0.weight", "0.bias" }, keys_of(net))
    assert.are.equal(12, net:num_parameters())
  end)

  it("Sequential and ModuleList indexing", function()
    local a, b = nn.Linear(2, 3), nn.ReLU()
    local seq = nn.Sequential(a, b)
    assert.are.equal(a, seq[1])
    assert.are.equal(b, seq[2])
    assert.are.equal(2, #seq)
    local ml = nn.ModuleList({ nn.Linear(2, 2), nn.Linear(2, 2) })
    ml:append(nn.Linear(2, 1))
    local n = 0
    for i, m in ipairs(ml) do n = n + 1; assert.are.equal(ml[i], m) end
    assert.are.equal(3, n)
    assert.are.equal("2.weight", keys_of(ml)[5])
    local named = nn.Sequential({ { "enc", nn.Linear(2, 2) }, { "act", nn.Tanh() } })
    assert.are.same({ "enc.weight", "enc.bias" }, keys_of(named))
  end)
end)

describe("nn default initialisation (PyTorch 1.13's)", function()
  local function check_uniform(t, bound, label)
    local s = stats(t)
    assert.is_true(s.min >= -bound and s.max <= bound,
      string.format("%s: [%g, %g] outside +-%g", label, s.min, s.max, bound))
    if s.n >= 1000 then
      -- U(-b, b): mean 0, variance b^2/3; extremes close to the bound
      assert.is_true(math.abs(s.mean) < 4 * bound / math.sqrt(3 * s.n), label .. " mean " .. s.mean)
      assert.is_true(math.abs(s.var / (bound * bound / 3) - 1) < 0.1, label .. " variance " .. s.var)
      assert.is_true(s.max > 0.98 * bound and s.min < -0.98 * bound, label .. " range")
    end
  end

  it("Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias", function()
    fdm.manual_seed(1)
    local l = nn.Linear(100, 300)
    check_uniform(l.weight, 0.1, "weight")
    check_uniform(l.bias, 0.1, "bias")
    assert.is_true(stats(l.bias).max > 0.08)
  end)

  it("Conv2d: fan_in = in/groups * kh * kw", function()
    local c = nn.Conv2d(16, 64, 3, { groups = 2 })
    check_uniform(c.weight, 1 / math.sqrt(8 * 9), "weight")
    check_uniform(c.bias, 1 / math.sqrt(8 * 9), "bias")
    assert.is_true(stats(c.weight).max > 0.98 / math.sqrt(72))
  end)

  it("ConvTranspose2d: fan_in from weight dim 2 (out/groups) * kh * kw", function()
    local c = nn.ConvTranspose2d(64, 32, 3)
    local b = 1 / math.sqrt(32 * 9)
    check_uniform(c.weight, b, "weight")
    check_uniform(c.bias, b, "bias")
    -- the bound is not 1/sqrt(64*9)
    assert.is_true(stats(c.weight).max > 1.3 / math.sqrt(64 * 9))
  end)

  it("norm layers: weight 1, bias 0, running stats 0 / 1", function()
    local bn = nn.BatchNorm2d(5)
    assert.are.same({ 1, 1, 1, 1, 1 }, bn.weight:tolist())
    assert.are.same({ 0, 0, 0, 0, 0 }, bn.bias:tolist())
    assert.are.same({ 0, 0, 0, 0, 0 }, bn.running_mean:tolist())
    assert.are.same({ 1, 1, 1, 1, 1 }, bn.running_var:tolist())
    assert.are.equal(0, bn.num_batches_tracked:item())
    assert.are.same({ 1, 1, 1 }, nn.GroupNorm(1, 3).weight:tolist())
    assert.are.same({ 0, 0 }, nn.LayerNorm(2).bias:tolist())
  end)

  it("is reproducible from fdm.manual_seed", function()
    fdm.manual_seed(7); local a = nn.Linear(4, 4)
    fdm.manual_seed(7); local b = nn.Linear(4, 4)
    H.assert_close(a.weight, b.weight, { atol = 0, rtol = 0 })
    H.assert_close(a.bias, b.bias, { atol = 0, rtol = 0 })
  end)

  it("nn.init functions", function()
    local w = fdm.empty(256, 128)
    nn.init.xavier_uniform_(w)
    check_uniform(w, math.sqrt(6 / (256 + 128)), "xavier")
    nn.init.kaiming_uniform_(w, 0, "fan_in", "relu")
    check_uniform(w, math.sqrt(2) * math.sqrt(3 / 128), "kaiming")
    nn.init.zeros_(w)
    assert.are.equal(0, w:abs():max():item())
    local fi, fo = nn.init.calculate_fan_in_and_fan_out(fdm.empty(8, 4, 3, 3))
    assert.are.equal(36, fi); assert.are.equal(72, fo)
  end)
end)

describe("nn train / eval", function()
  it("BatchNorm2d uses batch statistics in training and running ones in eval", function()
    fdm.manual_seed(3)
    local bn = nn.BatchNorm2d(3)
    local x = fdm.randn(8, 3, 4, 4) * 2 + 1
    assert.is_true(bn.training)
    local y = bn(x)
    -- per-channel mean ~0 and biased var ~1 in training mode
    local m = H.flat(y:mean({ 1, 3, 4 }))
    for _, v in ipairs(m) do assert.is_true(math.abs(v) < 1e-5) end
    assert.are.equal(1, bn.num_batches_tracked:item())
    -- running stats: 0.9 * init + 0.1 * batch stats (unbiased variance)
    H.assert_close(bn.running_mean, x:mean({ 1, 3, 4 }) * 0.1, { atol = 1e-5 })
    H.assert_close(bn.running_var, x:var({ 1, 3, 4 }) * 0.1 + 0.9, { atol = 1e-5 })
    bn:eval()
    assert.is_false(bn.training)
    local ye = bn(x)
    local rm, rv = bn.running_mean:view(1, 3, 1, 1), bn.running_var:view(1, 3, 1, 1)
    H.assert_close(ye, (x - rm) / fdm.sqrt(rv + 1e-5), { atol = 1e-5 })
    assert.are.equal(1, bn.num_batches_tracked:item())   -- eval does not count
  end)

  it("train()/eval() recurse and Dropout is the identity in eval", function()
    local net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(2)))
    net:eval()
    for _, m in ipairs(net:modules()) do assert.is_false(m.training) end
    local x = fdm.randn(16, 4)
    H.assert_close(net[2][1](x), x, { atol = 0, rtol = 0 })
    net:train()
    for _, m in ipairs(net:modules()) do assert.is_true(m.training) end
    local y = net[2][1](fdm.ones(1000))
    local zeros = 0
    for _, v in ipairs(H.flat(y)) do
      if v == 0 then zeros = zeros + 1 else assert.is_true(math.abs(v - 2) < 1e-6) end
    end
    assert.is_true(zeros > 400 and zeros < 600, "dropped " .. zeros)
  end)

  it("zero_grad and requires_grad_", function()
    local l = nn.Linear(3, 2)
    l(fdm.randn(4, 3)):sum():backward()
    assert.is_not_nil(l.weight.grad)
    l:zero_grad()
    assert.is_nil(l.weight.grad)
    l:requires_grad_(false)
    assert.is_false(l.weight.requires_grad)
    l:requires_grad_(true)
    assert.is_true(l.bias.requires_grad)
  end)

  it("to('cpu') keeps parameters usable", function()
    local l = nn.Linear(3, 2)
    l:to("cpu")
    assert.are.equal("cpu", l.weight.device)
    assert.is_true(l.weight.requires_grad)
    assert.are.same({ 5, 2 }, l(fdm.randn(5, 3)).shape)
  end)

  it("to(dtype) converts floating parameters and keeps requires_grad over a round trip", function()
    local net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm2d(2))
    net:to("float16")
    assert.are.equal("float16", net[1].weight.dtype)
    assert.are.equal("int64", net[2].num_batches_tracked.dtype)
    net:to("float32")
    assert.are.equal("float32", net[1].weight.dtype)
    assert.is_true(net[1].weight.requires_grad and net[1].weight.is_leaf)
  end)

  it("BatchNorm2d with momentum = false keeps a cumulative average", function()
    local bn = nn.BatchNorm2d(1, { momentum = false })
    bn(fdm.full({ 2, 1, 2, 2 }, 1)); bn(fdm.full({ 2, 1, 2, 2 }, 3))
    H.assert_close(bn.running_mean, fdm.tensor({ 2 }), { atol = 1e-6 })
    assert.are.equal(2, bn.num_batches_tracked:item())
  end)
end)

describe("nn state_dict / load_state_dict", function()
  local function net()
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
  end

  it("round trip reproduces outputs", function()
    local a, b = net(), net()
    a[2].running_mean:fill_(0.5)
    b:load_state_dict(a:state_dict())
    a:eval(); b:eval()
    local x = fdm.randn(2, 1, 3, 3)
    H.assert_close(b(x), a(x), { atol = 0, rtol = 0 })
    H.assert_close(b[2].running_mean, a[2].running_mean, { atol = 0, rtol = 0 })
    -- copies, not aliases
    b[1].weight:detach():fill_(0)
    assert.is_true(a[1].weight:abs():sum():item() > 0)
  end)

  it("state_dict tensors share storage with the parameters", function()
    local l = nn.Linear(2, 2)
    local sd = l:state_dict()
    fdm.no_grad(function() l.weight:fill_(3) end)
    assert.are.equal(3, sd.weight[1][1]:item())
    assert.is_false(sd.weight.requires_grad)
  end)

  it("missing and unexpected keys are errors when strict", function()
    local a = net()
    local sd = a:state_dict()
    sd["1.running_var"] = nil
    sd["5.weight"] = fdm.zeros(1)
    local ok, err = pcall(function() net():load_state_dict(sd) end)
    assert.is_false(ok)
    assert.matches('Missing key%(s%) in state_dict: "1.running_var"', err)
    assert.matches('Unexpected key%(s%) in state_dict: "5.weight"', err)
    assert.matches("Sequential", err)
    local r = net():load_state_dict(sd, { strict = false })
    assert.are.same({ "1.running_var" }, r.missing_keys)
    assert.are.same({ "5.weight" }, r.unexpected_keys)
  end)

  it("shape mismatches are errors even when not strict", function()
    local sd = net():state_dict()
    sd["3.weight"] = fdm.zeros(3, 4)
    local target = net()
    local before = target[4].weight:clone()
    local ok, err = pcall(function() target:load_state_dict(sd, { strict = false }) end)
    assert.is_false(ok)
    assert.matches("size mismatch for 3.weight: copying a param with shape %[3, 4%] from checkpoint, " ..
      "the shape in current model is %[2, 4%]", err)
    H.assert_close(target[4].weight, before, { atol = 0, rtol = 0 })   -- nothing loaded
  end)

  it("loads int64 num_batches_tracked", function()
    local sd = net():state_dict()
    sd["1.num_batches_tracked"] = fdm.tensor(17, { dtype = "int64" })
    local n = net()
    n:load_state_dict(sd)
    assert.are.equal(17, n[2].num_batches_tracked:item())
  end)
end)

describe("nn repr (as PyTorch's)", function()
  it("prints the module tree", function()
    local net = nn.Sequential(nn.Conv2d(1, 64, 3, { padding = 1 }), nn.BatchNorm2d(64), nn.GELU(),
      nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), nn.Linear(64, 10, { bias = false }),
      nn.ConvTranspose2d(4, 2, 4, { stride = 2, padding = 1, groups = 2 }),
      nn.GroupNorm(2, 4), nn.LayerNorm(8, { eps = 1e-6 }), nn.Dropout(0.1), nn.SiLU(), nn.Identity())
    local expected = table.concat({
      "Sequential(",
      "  (0): Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))",
      "  (1): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)",
      "  (2): GELU(approximate='none')",
      "  (3): Sequential(",
      "    (0): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)",
      "    (1): Flatten(start_dim=2, end_dim=-1)",
      "  )",
      "  (4): Linear(in_features=64, out_features=10, bias=False)",
      "  (5): ConvTranspose2d(4, 2, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), groups=2)",
      "  (6): GroupNorm(2, 4, eps=1e-05, affine=True)",
      "  (7): LayerNorm((8,), eps=1e-06, elementwise_affine=True)",
      "  (8): Dropout(p=0.1, inplace=False)",
      "  (9): SiLU()",
      "  (10): Identity()",
      ")" }, "\n")
    assert.are.equal(expected, tostring(net))
  end)
end)

describe("nn layers", function()
  it("Flatten / Unflatten / Upsample / pools / Softmax shapes", function()
    local x = fdm.randn(2, 3, 4, 4)
    assert.are.same({ 2, 48 }, nn.Flatten()(x).shape)
    assert.are.same({ 2, 3, 16 }, nn.Flatten(3)(x).shape)
    assert.are.same({ 2, 3, 2, 2, 4 }, nn.Unflatten(3, { 2, 2 })(x).shape)
    assert.are.same({ 2, 3, 8, 8 }, nn.Upsample({ scale_factor = 2 })(x).shape)
    assert.are.same({ 2, 3, 2, 2 }, nn.AvgPool2d(2)(x).shape)
    assert.are.same({ 2, 3, 2, 2 }, nn.MaxPool2d(2)(x).shape)
    local s = nn.Softmax(2)(x):sum(2)
    H.assert_close(s, fdm.ones(2, 4, 4), { atol = 1e-6 })
    assert.are.same({ 2, 3, 4, 4 }, nn.Conv2d(3, 3, 3, { padding = "same" })(x).shape)
    assert.are.same({ 2, 5, 8, 8 }, nn.ConvTranspose2d(3, 5, 4, { stride = 2, padding = 1 })(x).shape)
  end)

  it("Linear computes x W^T + b", function()
    local l = nn.Linear(2, 1)
    fdm.no_grad(function()
      l.weight:copy_(fdm.tensor({ { 2, -1 } }))
      l.bias:fill_(0.5)
    end)
    H.assert_close(l(fdm.tensor({ { 1, 3 }, { 4, 1 } })), fdm.tensor({ { -0.5 }, { 7.5 } }))
  end)
end)

describe("nn against PyTorch (golden)", function()
  local function run(file, net, tol)
    local G = H.load_golden(H.here("golden/" .. file))
    local sd = {}
    for k, v in pairs(G) do
      local n = k:match("^sd%.(.+)$")
      if n then sd[n] = v end
    end
    net:load_state_dict(sd)
    net:train()
    local x = G.x:clone():requires_grad_()
    local out = net(x)
    H.assert_close(out, G.out, tol, "out")
    local loss = (out * G.r):sum()
    H.assert_close(loss:reshape(1), G.loss, tol, "loss")
    loss:backward()
    H.assert_close(x.grad, G["x.grad"], tol, "x.grad")
    for _, e in ipairs(net:named_parameters()) do
      H.assert_close(e[2].grad, G["grad." .. e[1]], tol, "grad." .. e[1])
    end
    for _, e in ipairs(net:named_buffers()) do
      H.assert_close(e[2], G["after." .. e[1]], tol, "after." .. e[1])
    end
    net:eval()
    local oe = fdm.no_grad(function() return net(G.x) end)
    H.assert_close(oe, G.out_eval, tol, "out_eval")
  end

  it("Conv2d-BatchNorm2d-GELU-Flatten-Linear forward/backward", function()
    run("nn_net1.safetensors", nn.Sequential(nn.Conv2d(2, 4, 3, { padding = 1 }), nn.BatchNorm2d(4),
      nn.GELU(), nn.Flatten(), nn.Linear(100, 3)), { atol = 1e-4, rtol = 1e-4 })
  end)

  it("ConvTranspose2d-GroupNorm-SiLU-AvgPool2d-Flatten-LayerNorm-Linear-Tanh forward/backward", function()
    run("nn_net2.safetensors", nn.Sequential(
      nn.ConvTranspose2d(2, 3, 3, { stride = 2, padding = 1, output_padding = 1 }),
      nn.GroupNorm(1, 3), nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(), nn.LayerNorm(75),
      nn.Linear(75, 3), nn.Tanh()), { atol = 1e-4, rtol = 1e-4 })
  end)
end)
