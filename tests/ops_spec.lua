-- tests/ops_spec.lua: table-driven op tests against PyTorch references
-- (in the spirit of ggml's test-backend-ops).
--
-- The references live in tests/golden/ops_<group>.safetensors, written by
-- tools/gen_golden.py (PyTorch, computed in float64 from the float32 inputs and
-- rounded once to float32). For every case below and every device:
--   * the op runs on the golden inputs (<case>.in0, .in1, ...; Lua gets them as
--     arguments 2, 3, ... after the case parameters p from the file's metadata);
--   * every result is compared with <case>.out, <case>.out1, ...;
--   * for differentiable cases, sum(out * <case>.R):backward() and each float
--     input's .grad is compared with <case>.grad<i>;
--   * on devices other than cpu, results and gradients are also compared with
--     the cpu ones;
--   * on cpu, gradients are also checked by central finite differences in
--     float32 (helpers.gradcheck; at most 16 elements per input).
--
-- Tolerances (|got - ref| <= atol + rtol*|ref|): defaults atol 1e-5, rtol 1e-5
-- for forward results (the reference is exact to float32 rounding; fdm
-- computes in float32, so elementwise results should be within a few ulp);
-- gradients atol 2e-5 rtol 1e-4. Ops that sum many products (matmul, conv,
-- norms) use 1e-4 / 1e-4. Finite differences: eps 1e-2, atol/rtol 1e-2 (the
-- golden comparison is the precise check; FD guards the derivative formulas).
local fdm = require "fdm"
local H = require "helpers"
local F = fdm.F

local TOL = { atol = 1e-5, rtol = 1e-5 }
local GTOL = { atol = 2e-5, rtol = 1e-4 }
local SUMTOL = { atol = 1e-4, rtol = 1e-4 }

local function u(f) return function(p, x) return f(x) end end
local function b(f) return function(p, x, y) return f(x, y) end end

-- { golden case name, function(p, inputs...) -> outputs..., optional: tol, gtol, fd = false | {eps, atol, rtol} }
local CASES = {
  elementwise = {
    { "add", b(fdm.add) },
    { "add_bcast", b(fdm.add) },
    { "add_bcast_scalar_tensor", function(p, x, y) return x + y end },
    { "add_alpha", function(p, x, y) return fdm.add(x, y, p.alpha) end },
    { "add_number", function(p, x) return x + p.s end },
    { "rsub_number", function(p, x) return p.s - x end },
    { "sub_bcast", b(fdm.sub) },
    { "mul_bcast", function(p, x, y) return x * y end },
    { "mul_number", function(p, x) return x * p.s end },
    { "div_bcast", b(fdm.div) },
    { "rdiv_number", function(p, x) return p.s / x end },
    { "pow_tensor", b(fdm.pow), tol = { atol = 1e-5, rtol = 2e-5 } },
    { "pow_number", function(p, x) return x ^ p.e end },
    { "pow_number_frac", function(p, x) return fdm.pow(x, p.e) end },
    { "maximum", b(fdm.maximum) },
    { "minimum_bcast", b(fdm.minimum) },
    { "neg", u(fdm.neg) },
    { "abs", u(fdm.abs) },
    { "sqrt", u(fdm.sqrt) },
    { "rsqrt", u(fdm.rsqrt) },
    { "exp", u(fdm.exp) },
    { "log", u(fdm.log) },
    { "sin", u(fdm.sin) },
    { "cos", u(fdm.cos) },
    { "square", u(fdm.square) },
    { "sign", u(fdm.sign) },
    { "clamp", function(p, x) return fdm.clamp(x, p.lo, p.hi) end },
    { "clamp_lo", function(p, x) return fdm.clamp(x, p.lo, nil) end },
    { "clamp_hi", function(p, x) return x:clamp(nil, p.hi) end },
    { "where", function(p, c, x, y) return fdm.where(c, x, y) end },
    { "eq", b(fdm.eq) },
    { "ne", b(fdm.ne) },
    { "lt", b(fdm.lt) },
    { "le", function(p, x, y) return x:le(y) end },
    { "gt", b(fdm.gt) },
    { "ge", b(fdm.ge) },
    { "lt_bcast", b(fdm.lt) },
    { "logical_not", u(fdm.logical_not) },
    { "logical_and", b(fdm.logical_and) },
    { "logical_or", b(fdm.logical_or) },
    { "add_int64", function(p, x, y) return x + y end },
    { "mul_int64", b(fdm.mul) },
    { "add_int64_float32", b(fdm.add) },
  },
  reduce = {
    { "sum_all", function(p, x) return x:sum() end },
    { "sum_dim", function(p, x) return x:sum(p.dim) end },
    { "sum_dim_neg_keepdim", function(p, x) return x:sum(p.dim, true) end },
    { "sum_dims", function(p, x) return x:sum(p.dim, p.keepdim) end },
    { "mean_all", function(p, x) return x:mean() end },
    { "mean_dim", function(p, x) return x:mean(p.dim) end },
    { "mean_dims", function(p, x) return x:mean(p.dim) end },
    { "var_dim", function(p, x) return x:var(p.dim, { unbiased = p.unbiased }) end },
    { "var_dim_biased_keepdim", function(p, x) return x:var(p.dim, { unbiased = p.unbiased, keepdim = p.keepdim }) end },
    { "var_dims", function(p, x) return x:var(p.dim, { unbiased = p.unbiased }) end },
    { "std_dim", function(p, x) return x:std(p.dim, { unbiased = p.unbiased }) end },
    { "std_dim_biased", function(p, x) return x:std(p.dim, { unbiased = p.unbiased }) end },
    { "max_all", function(p, x) return x:max() end },
    { "min_all", function(p, x) return x:min() end },
    { "max_dim", function(p, x) return x:max(p.dim) end },
    { "max_dim_keepdim", function(p, x) return x:max(p.dim, p.keepdim) end },
    { "min_dim", function(p, x) return x:min(p.dim) end },
    { "argmax_all", function(p, x) return x:argmax() end },
    { "argmax_dim", function(p, x) return x:argmax(p.dim) end },
    { "argmin_dim", function(p, x) return x:argmin(p.dim) end },
    { "quantile_all", function(p, x) return fdm.quantile(x, p.q) end },
    { "quantile_dim", function(p, x) return fdm.quantile(x, p.q, p.dim) end },
    { "quantile_dim_keepdim", function(p, x) return fdm.quantile(x, p.q, p.dim, p.keepdim) end },
    { "norm", function(p, x) return x:norm() end },
    { "all", function(p, x) return x:all() end },
    { "any", function(p, x) return x:any() end },
    { "all_true", function(p, x) return x:all() end },
    { "any_false", function(p, x) return x:any() end },
  },
  shape = {
    { "flip", function(p, x) return x:flip(table.unpack(p.dims)) end },
    { "flip_one", function(p, x) return x:flip(table.unpack(p.dims)) end },
    { "roll", function(p, x) return x:roll(p.shifts, p.dims) end },
    { "roll_neg", function(p, x) return x:roll(p.shifts, p.dims) end },
    { "roll_multi", function(p, x) return x:roll(p.shifts, p.dims) end },
    { "cat", function(p, a, b_, c) return fdm.cat({ a, b_, c }, p.dim) end },
    { "cat_last", function(p, a, b_) return fdm.cat({ a, b_ }, p.dim) end },
    { "stack", function(p, a, b_) return fdm.stack({ a, b_ }, p.dim) end },
    { "stack_mid", function(p, a, b_, c) return fdm.stack({ a, b_, c }, p.dim) end },
    { "pad_last", function(p, x) return fdm.pad(x, p.pad) end },
    { "pad_2d_value", function(p, x) return fdm.pad(x, p.pad, p.value) end },
    { "transpose_contiguous", function(p, x) return x:transpose(p.d1, p.d2):contiguous() end },
    { "permute", function(p, x) return x:permute(table.unpack(p.perm)):contiguous() end },
    { "narrow", function(p, x) return x:narrow(p.dim, p.start, p.len) end },
    { "slice_step", function(p, x) return x:slice(p.dim, p.start, p.stop, p.step) end },
    { "select", function(p, x) return x:select(p.dim, p.i) end },
    { "expand_mul", function(p, x) return x:expand(table.unpack(p.shape)) * 1.0 end },
    { "view_reshape", function(p, x) return x:reshape(table.unpack(p.shape)) end },
    { "transpose_reshape", function(p, x) return x:transpose(1, 3):reshape(table.unpack(p.shape)) end },
    { "unsqueeze_squeeze", function(p, x) return x:unsqueeze(2):squeeze() end },
    { "flatten", function(p, x) return x:flatten(p.start, p.stop) end },
    { "split", function(p, x) return table.unpack(x:split(p.size, p.dim)) end },
    { "chunk", function(p, x) return table.unpack(x:chunk(p.n, p.dim)) end },
  },
  linalg = {
    { "matmul_1d_1d", b(F.matmul) },
    { "matmul_1d_2d", b(F.matmul) },
    { "matmul_2d_1d", b(F.matmul) },
    { "matmul_2d_2d", b(F.matmul) },
    { "matmul_batched", b(F.matmul) },
    { "matmul_bcast_3d_2d", b(F.matmul) },
    { "matmul_bcast_4d_3d", b(F.matmul) },
    { "matmul_1d_3d", b(F.matmul) },
    { "matmul_3d_1d", b(F.matmul) },
    { "matmul_large_k", b(F.matmul), tol = { atol = 2e-4, rtol = 1e-4 }, gtol = { atol = 2e-4, rtol = 1e-4 } },
    { "bmm", b(F.bmm) },
    { "linear", function(p, x, w, bias) return F.linear(x, w, bias) end },
    { "linear_nobias", function(p, x, w) return F.linear(x, w) end },
    { "linear_3d", function(p, x, w, bias) return F.linear(x, w, bias) end },
    { "linear_1d", function(p, x, w, bias) return F.linear(x, w, bias) end },
  },
  conv = {},
  interp = {},
  norm = {},
  act = {
    { "gelu", function(p, x) return F.gelu(x) end },
    { "gelu_tanh", function(p, x) return F.gelu(x, p.approximate) end },
    { "silu", u(F.silu) },
    { "relu", u(F.relu) },
    { "sigmoid", u(F.sigmoid) },
    { "tanh", u(F.tanh) },
    { "softmax_last", function(p, x) return F.softmax(x, p.dim) end },
    { "softmax_mid", function(p, x) return F.softmax(x, p.dim) end },
    { "softmax_large", function(p, x) return F.softmax(x, p.dim) end },
    { "log_softmax_last", function(p, x) return F.log_softmax(x, p.dim) end },
    { "log_softmax_first", function(p, x) return F.log_softmax(x, p.dim) end },
    { "dropout_eval", function(p, x) return F.dropout(x, p.p, p.training) end },
  },
  misc = {
    { "mse_loss_mean", function(p, a, b_) return F.mse_loss(a, b_) end },
    { "mse_loss_sum", function(p, a, b_) return F.mse_loss(a, b_, p.reduction) end },
    { "mse_loss_none", function(p, a, b_) return F.mse_loss(a, b_, p.reduction) end },
    { "cross_entropy_mean", function(p, x, y) return F.cross_entropy(x, y) end },
    { "cross_entropy_sum", function(p, x, y) return F.cross_entropy(x, y, p.reduction) end },
    { "cross_entropy_none", function(p, x, y) return F.cross_entropy(x, y, p.reduction) end },
    { "one_hot", function(p, y) return F.one_hot(y, p.n) end },
    { "one_hot_2d", function(p, y) return F.one_hot(y, p.n) end },
    { "gaussian_blur_k5", function(p, x) return F.gaussian_blur(x, p.kernel_size, p.sigma) end },
    { "gaussian_blur_rect", function(p, x) return F.gaussian_blur(x, p.kernel_size, p.sigma) end },
    { "gaussian_blur_3d_input", function(p, x) return F.gaussian_blur(x, p.kernel_size, p.sigma) end },
    { "sdpa", function(p, q, k, v) return F.scaled_dot_product_attention(q, k, v) end, tol = SUMTOL, gtol = SUMTOL },
    { "sdpa_3d", function(p, q, k, v) return F.scaled_dot_product_attention(q, k, v) end, tol = SUMTOL, gtol = SUMTOL },
    { "sdpa_bool_mask", function(p, q, k, v, m) return F.scaled_dot_product_attention(q, k, v, m) end,
      tol = SUMTOL, gtol = SUMTOL },
    { "sdpa_float_mask", function(p, q, k, v, m) return F.scaled_dot_product_attention(q, k, v, m) end,
      tol = SUMTOL, gtol = SUMTOL },
  },
}

local function conv_opts(p)
  return { stride = p.stride, padding = p.padding, dilation = p.dilation, groups = p.groups,
    output_padding = p.output_padding }
end
for _, n in ipairs { "conv2d_basic", "conv2d_nobias", "conv2d_stride2_pad1", "conv2d_dilation2",
  "conv2d_groups2", "conv2d_depthwise", "conv2d_rect", "conv2d_1x1" } do
  table.insert(CASES.conv, { n, function(p, x, w, bias) return F.conv2d(x, w, bias, conv_opts(p)) end,
    tol = SUMTOL, gtol = SUMTOL })
end
for _, n in ipairs { "conv_transpose2d_basic", "conv_transpose2d_s2p1op1", "conv_transpose2d_k4s2p1",
  "conv_transpose2d_groups2", "conv_transpose2d_nobias_dil" } do
  table.insert(CASES.conv, { n, function(p, x, w, bias) return F.conv_transpose2d(x, w, bias, conv_opts(p)) end,
    tol = SUMTOL, gtol = SUMTOL })
end
for _, n in ipairs { "avg_pool2d_k2", "avg_pool2d_k3s2p1", "avg_pool2d_rect" } do
  table.insert(CASES.conv, { n, function(p, x) return F.avg_pool2d(x, p.kernel, { stride = p.stride, padding = p.padding }) end })
end
for _, n in ipairs { "max_pool2d_k2", "max_pool2d_k3s2p1", "max_pool2d_k3s1" } do
  table.insert(CASES.conv, { n, function(p, x) return F.max_pool2d(x, p.kernel, { stride = p.stride, padding = p.padding }) end })
end
for _, n in ipairs { "nearest_up2_scale", "nearest_up_size", "nearest_down_size", "nearest_down_half",
  "bilinear_up2_noac", "bilinear_up_size_noac", "bilinear_down_size_noac", "bilinear_down_half_noac",
  "bilinear_up2_ac", "bilinear_up_size_ac", "bilinear_down_size_ac", "bilinear_down_half_ac" } do
  table.insert(CASES.interp, { n, function(p, x)
    return F.interpolate(x, { size = p.size, scale_factor = p.scale_factor, mode = p.mode,
      align_corners = p.align_corners })
  end })
end
for _, n in ipairs { "batch_norm_train", "batch_norm_train_2d", "batch_norm_train_noaffine",
  "batch_norm_eval", "batch_norm_eval_noaffine" } do
  table.insert(CASES.norm, { n, function(p, x, rm, rv, w, bias)
    local y = F.batch_norm(x, rm, rv, w, bias, p.training, p.momentum, p.eps)
    return y, rm, rv      -- running stats are updated in place in training mode
  end, tol = SUMTOL, gtol = SUMTOL })
end
for _, n in ipairs { "group_norm", "group_norm_g1", "group_norm_noaffine" } do
  table.insert(CASES.norm, { n, function(p, x, w, bias) return F.group_norm(x, p.groups, w, bias, p.eps) end,
    tol = SUMTOL, gtol = SUMTOL })
end
-- group_norm_act: the first output with gradients (the composite of group_norm, mul, add and the
-- activation), the second from the fused kernel (no gradients); both against the same reference
for _, n in ipairs { "group_norm_act_gelu_scale_shift", "group_norm_act_silu", "group_norm_act_scale_3d" } do
  table.insert(CASES.norm, { n, function(p, x, w, bias, a4, a5)
    local o = { act = p.act, scale = p.scale and a4 or nil, shift = p.shift and (p.scale and a5 or a4) or nil }
    return F.group_norm_act(x, p.groups, w, bias, 1e-5, o),
      fdm.no_grad(function() return F.group_norm_act(x, p.groups, w, bias, 1e-5, o) end)
  end, tol = SUMTOL, gtol = SUMTOL })
end
for _, n in ipairs { "layer_norm", "layer_norm_2dims", "layer_norm_noaffine" } do
  table.insert(CASES.norm, { n, function(p, x, w, bias) return F.layer_norm(x, p.normalized_shape, w, bias, p.eps) end,
    tol = SUMTOL, gtol = SUMTOL })
end

local GROUP_ORDER = { "elementwise", "reduce", "shape", "linalg", "conv", "interp", "norm", "act", "misc" }
local DEVICES = H.devices()

-- golden inputs of a case, as a list (n = count)
local function golden_inputs(G, name)
  local ins, n = {}, 0
  while G[name .. ".in" .. n] ~= nil do
    ins[n + 1] = G[name .. ".in" .. n]
    n = n + 1
  end
  return ins, n
end

local function golden_outputs(G, name)
  local outs = { G[name .. ".out"] }
  local k = 1
  while G[name .. ".out" .. k] ~= nil do
    outs[k + 1] = G[name .. ".out" .. k]
    k = k + 1
  end
  return outs
end

local function fresh(t, dev, grad)
  -- a new leaf on dev, independent of the golden tensor (ops may update inputs in place)
  local c = t:clone()
  if dev ~= "cpu" then c = c:to(dev) end
  if grad then c:requires_grad_() end
  return c
end

-- runs a case on dev: returns outputs (list), a function doing the backward
-- of sum(out * R) and returning the input grads (index -> tensor), n inputs
local function run(c, p, G, name, dev)
  local ins, n = golden_inputs(G, name)
  local args = {}
  for i = 1, n do
    local wants = G[name .. ".grad" .. (i - 1)] ~= nil
    args[i] = fresh(ins[i], dev, wants)
  end
  local outs = table.pack(c[2](p, table.unpack(args, 1, n)))
  local function backward()
    local grads = {}
    local R = G[name .. ".R"]
    if R == nil then return grads end
    assert(outs[1] ~= nil, name .. ": op returned nil")
    local Rd = dev ~= "cpu" and R:to(dev) or R
    local loss = (outs[1] * Rd):sum()
    loss:backward()
    for i = 1, n do
      if G[name .. ".grad" .. (i - 1)] ~= nil then grads[i] = args[i].grad end
    end
    return grads
  end
  return outs, backward, n
end

describe("ops vs PyTorch golden", function()
  for _, group in ipairs(GROUP_ORDER) do
    local path = H.here("golden/ops_" .. group .. ".safetensors")
    describe(group, function()
      local G, P = H.load_golden(path)
      local listed = {}
      for _, c in ipairs(CASES[group]) do
        local name = c[1]
        listed[name] = true
        local p = P[name] or {}
        local tol, gtol = c.tol or TOL, c.gtol or GTOL
        local cpu_res
        for _, dev in ipairs(DEVICES) do
          it(name .. " [" .. dev .. "]", function()
            assert(G[name .. ".out"] ~= nil, "golden case " .. name .. " missing from " .. path)
            local outs, backward, n = run(c, p, G, name, dev)
            local exp = golden_outputs(G, name)
            for k = 1, #exp do
              H.assert_close(outs[k], exp[k], tol, string.format("%s output %d", name, k))
            end
            local grads = backward()
            for i = 1, n do
              local ge = G[name .. ".grad" .. (i - 1)]
              if ge ~= nil then
                assert(grads[i] ~= nil, string.format("%s: input %d got no .grad", name, i))
                H.assert_close(grads[i], ge, gtol, string.format("%s grad of input %d", name, i))
              end
            end
            if dev == "cpu" then
              cpu_res = { outs = outs, grads = grads }
            elseif cpu_res then
              for k = 1, #exp do
                H.assert_close(outs[k], cpu_res.outs[k], tol, string.format("%s output %d vs cpu", name, k))
              end
              for i, gr in pairs(grads) do
                H.assert_close(gr, cpu_res.grads[i], gtol, string.format("%s grad %d vs cpu", name, i))
              end
            end
          end)
        end
        if c.fd ~= false then
          it(name .. " gradcheck (finite differences, cpu)", function()
            local R = G[name .. ".R"]
            if R == nil then return end   -- not differentiable
            local ins, n = golden_inputs(G, name)
            local wrt = {}
            for i = 1, n do
              if G[name .. ".grad" .. (i - 1)] ~= nil then wrt[#wrt + 1] = i end
            end
            local fd = c.fd or {}
            H.gradcheck(function(...)
              -- clone buffers that ops update in place (batch_norm running stats)
              local a = table.pack(...)
              for i = 1, n do
                if a[i] ~= nil and not a[i].requires_grad and a[i].dtype == "float32" then a[i] = a[i]:clone() end
              end
              return (c[2](p, table.unpack(a, 1, n)))
            end, ins, { n = n, wrt = wrt, R = R, eps = fd.eps, atol = fd.atol, rtol = fd.rtol })
          end)
        end
      end
      it("every golden case of " .. group .. " has an entry in ops_spec", function()
        local missing = {}
        for k in pairs(P) do
          if k ~= "__generator__" and not listed[k] then missing[#missing + 1] = k end
        end
        table.sort(missing)
        assert(#missing == 0, "no spec entry for: " .. table.concat(missing, ", "))
      end)
    end)
  end
end)
