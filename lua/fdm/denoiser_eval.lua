-- fdm.denoiser_eval: how well a one-step denoiser (Part B 1.2) restores the
-- MNIST test set at each noise level: z = x + sigma eps, y = net(z); MSE and
-- PSNR of y (clamped to [0,1], as the pictures show it) against x, next to
-- the noisy input's (z clamped the same way). PSNR = 10 log10(1 / MSE), the
-- MSE taken over every pixel of the evaluated set. scripts/eval.lua --model
-- calls it for denoiser weights.
local fdm = rawget(_G, "fdm") or require "fdm"
local flow = require "fdm.flow"
local cls = require "fdm.classifier"

local E = {}

local function psnr(mse) return mse > 0 and 10 * math.log(1 / mse, 10) or math.huge end

-- -> list of {sigma, mse, psnr, noisy_mse, noisy_psnr}, n. opts: n (all of
-- the test set), sigmas, seed (noise), batch (256), device, images (instead
-- of the MNIST test set: float32 [N,1,28,28] in [0,1])
function E.measure(net, opts)
  local x_all = opts.images or cls.mnist("test").images
  local n = math.min(opts.n or x_all.shape[1], x_all.shape[1])
  local batch, dev = opts.batch or 256, opts.device or "cpu"
  local rows = {}
  for j, sigma in ipairs(opts.sigmas) do
    local se, se_noisy = 0, 0
    flow.with_rng((opts.seed or 0) + j, function()
      for s = 1, n, batch do
        local m = math.min(batch, n - s + 1)
        local x = x_all:narrow(1, s, m):contiguous()
        local z = flow.add_noise(x, sigma)
        local y = flow.denoise(net, dev ~= "cpu" and z:to(dev) or z):to("cpu")
        se = se + (fdm.clamp(y, 0, 1) - x):square():sum():item()
        se_noisy = se_noisy + (fdm.clamp(z, 0, 1) - x):square():sum():item()
      end
    end)
    local count = n * x_all.shape[2] * x_all.shape[3] * x_all.shape[4]
    local mse, mse_noisy = se / count, se_noisy / count
    rows[j] = { sigma = sigma, mse = mse, psnr = psnr(mse), noisy_mse = mse_noisy, noisy_psnr = psnr(mse_noisy) }
  end
  return rows, n
end

-- prints the table (and writes opts.json)
function E.report(net, opts)
  local t0 = fdm.time()
  local rows, n = E.measure(net, opts)
  print(("denoiser: %s"):format(opts.source or "?"))
  print(("MNIST test set, %d images; noise seed %d; outputs and noisy inputs clamped to [0,1]"):format(n, opts.seed or 0))
  print("")
  print(" sigma  MSE denoised  PSNR dB  |  MSE noisy  PSNR dB")
  print("------  ------------  -------  |  ---------  -------")
  local js = {}
  for j, r in ipairs(rows) do
    print(("%6.2f  %12.5f  %7.2f  |  %9.5f  %7.2f"):format(r.sigma, r.mse, r.psnr, r.noisy_mse, r.noisy_psnr))
    js[j] = ('{"sigma": %g, "mse": %.8f, "psnr": %.4f, "noisy_mse": %.8f, "noisy_psnr": %.4f}')
      :format(r.sigma, r.mse, math.min(r.psnr, 999), r.noisy_mse, math.min(r.noisy_psnr, 999))
  end
  print(("(%.1f s)"):format(fdm.time() - t0))
  if opts.json then
    local tmp = opts.json .. ".tmp"
    local f = assert(io.open(tmp, "w"))
    f:write(('{"n": %d, "seed": %d, "sigmas": [%s]}\n'):format(n, opts.seed or 0, table.concat(js, ", ")))
    f:close()
    assert(os.rename(tmp, opts.json))
  end
  return rows
end

return E
