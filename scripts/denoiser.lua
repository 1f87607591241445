-- denoiser.lua: the unconditional UNet as a one-step denoiser (Part B 1.2.1-1.2.3
-- of shared/spec/fun-with-diffusion.md).
--   1.2.1 train: z = x + sigma eps (noise drawn per batch), L2(net(z), x);
--         sigma 0.5, batch 256, D 128, Adam lr 1e-4, 5 epochs; loss curve;
--         test-set results after epochs 1 and 5
--   1.2.2 the trained denoiser on other noise levels: sigma 0, .2, .4, .5, .6, .8, 1.0
--   1.2.3 --pure-noise: train on z = eps (no image in the input at all);
--         outputs after epochs 1 and 5. What appears is the training set's mean
--         image: with no information in the input, the prediction that
--         minimises the expected squared error is the mean of the targets.
-- Writes out/denoiser/ (out/denoiser_pure_noise/ with --pure-noise): loss.png,
-- test_epochNN.png, ood_sigmas.png (1.2.2), mean_vs_output.png (1.2.3),
-- checkpoint.safetensors, model.safetensors.
-- --weights FILE skips training and draws the pictures from trained weights
-- (e.g. the shipped weights/denoiser_mnist.safetensors): test_results.png and
-- ood_sigmas.png in seconds.
local cli = require "fdm.cli"
local train = require "fdm.train"
local flow = require "fdm.flow"
local unet = require "fdm.unet"

local options = {
  { "sigma", "number", 0.5, "training noise level", min = 0 },
  { "pure-noise", "flag", false, "1.2.3: train to denoise pure noise (z = eps)" },
  { "sigmas", "numbers", { 0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0 }, "1.2.2: noise levels shown after training", min = 0 },
  { "show", "int", 8, "test images shown after each milestone epoch", min = 1 },
  { "sample-epochs", "ints", {}, "epochs after which to show test results (default 1 and epochs)" },
  { "weights", "string", nil, "no training: draw the test results and the sigma sweep with these trained weights" },
}
for _, o in ipairs(train.OPTIONS) do options[#options + 1] = o end
local spec = {
  name = "denoiser", summary = "one-step denoising UNet on MNIST (Part B 1.2.1-1.2.3)",
  common = train.COMMON,
  defaults = { epochs = 5, batch = 256, lr = 1e-4, hidden = 128 },
  options = options,
}
local args = cli.parse_or_exit(arg, spec)
local pure = args.pure_noise
if pure and not args.given.out then args.out = "out/denoiser_pure_noise" end
local sigmas = args.sigmas
print("denoiser: " .. cli.describe(args, spec))
fdm.manual_seed(args.seed)

local EXPLANATION = [[
1.2.3 pure noise: the input z = eps carries no information about the target
image x, so the best the network can do under the L2 loss is the single image
c minimising E||x - c||^2 over the training set, which is c = E[x], the
training set's mean image (its centroid). Every output is that same blurry
average digit, whatever the noise; a denoiser that sees an image-plus-noise
instead can move from this mean towards the image in its input.]]

local ds = train.load_data(args, "train")
local test = train.load_data(args, "test")
local loader = train.loader(ds, { batch = args.batch, shuffle = true })
local net
if args.weights then
  net = require("fdm.models").load(args.weights, { kinds = { "denoiser" }, what = "denoiser: --weights" })
  args.hidden = net.num_hiddens
else
  net = unet.UnconditionalUNet(1, args.hidden)
end
if args.device ~= "cpu" then net:to(args.device) end
print(string.format("UnconditionalUNet D=%d: %d parameters; %d training images (%s), %d batches of %d per epoch",
  args.hidden, net:num_parameters(), ds.n, args.dataset, #loader, args.batch))
if args.weights then
  print(string.format("trained weights %s: no training", args.weights))
else
  print(pure and "1.2.3: training on pure noise z = eps" or string.format("1.2.1: training with sigma = %g", args.sigma))
end
local opt = fdm.optim.Adam(net:parameters(), { lr = args.lr })

local milestones, is_milestone = train.milestones(args.epochs, args.sample_epochs, true)
local out = args.out
train.mkdir(out)
local dev = args.device
local show = math.min(args.show, test.n)
local clean = test.images:narrow(1, 1, show):contiguous()
local cols = {}
for i = 1, show do cols[i] = "test " .. i end
local mean_img = ds.images:mean(1)                                   -- [1,28,28]

local function on_dev(t) return dev ~= "cpu" and t:to(dev) or t end

local function test_results(epoch)
  local path = epoch and string.format("%s/test_epoch%02d.png", out, epoch) or out .. "/test_results.png"
  local when = epoch and ("after epoch " .. epoch) or ("of " .. tostring(args.weights))
  if pure then
    local z = flow.with_rng(args.sample_seed, function() return fdm.randn(show, 1, 28, 28) end)
    local y = flow.denoise(net, on_dev(z)):to("cpu")
    local imgs = {}
    for i = 1, show do imgs[#imgs + 1] = fdm.clamp(z[i] * 0.25 + 0.5, 0, 1) end
    for i = 1, show do imgs[#imgs + 1] = fdm.clamp(y[i], 0, 1) end
    fdm.io.save_grid(path, imgs, { nrow = show, row_captions = { "input eps", "output" }, col_captions = cols,
      title = "1.2.3 pure-noise denoiser " .. when })
    local d = (y - mean_img:unsqueeze(1)):square():mean():item()
    local spread = (y - y:mean(1, true)):square():mean():item()
    print(string.format("  %s: MSE(output, training mean) = %.3g; spread of outputs = %.3g; wrote %s",
      when, d, spread, path))
  else
    local z = flow.with_rng(args.sample_seed, function() return flow.add_noise(clean, args.sigma) end)
    local y = flow.denoise(net, on_dev(z)):to("cpu")
    local mse = (y - clean):square():mean():item()
    local imgs = {}
    for i = 1, show do imgs[#imgs + 1] = clean[i] end
    for i = 1, show do imgs[#imgs + 1] = fdm.clamp(z[i], 0, 1) end
    for i = 1, show do imgs[#imgs + 1] = fdm.clamp(y[i], 0, 1) end
    fdm.io.save_grid(path, imgs, { nrow = show, col_captions = cols,
      row_captions = { "clean", string.format("noisy s=%g", args.sigma), "denoised" },
      title = string.format("1.2.1 one-step denoiser on test images %s (MSE %.4f)", when, mse) })
    print(string.format("  %s: test MSE(denoised, clean) = %.5f on %d images; wrote %s", when, mse, show, path))
  end
end

local run
if args.weights then
  test_results(nil)
  run = { epoch = 0 }
else
  run = train.run {
    args = args, name = "denoiser", out = out, model = net, optimizer = opt,
    loader = loader, full_images = 60000,
    meta = { hidden = args.hidden, batch = args.batch, lr = args.lr, dataset = args.dataset,
             subset = args.subset, seed = args.seed, sigma = pure and "pure" or args.sigma,
             model = "UnconditionalUNet",
             ["fdm.kind"] = "denoiser", ["fdm.architecture"] = "UnconditionalUNet",
             ["fdm.in_channels"] = 1, ["fdm.hidden"] = args.hidden },
    loss = function(x) return flow.denoiser_loss(net, x, pure and "pure" or args.sigma) end,
    after_epoch = function(epoch) if is_milestone[epoch] then test_results(epoch) end end,
  }
end

if run.stopped then
  os.exit(0)
elseif pure then
  -- the output next to the training set's mean image
  local z = flow.with_rng(args.sample_seed + 1, function() return fdm.randn(4, 1, 28, 28) end)
  local y = flow.denoise(net, on_dev(z)):to("cpu")
  local imgs = { fdm.clamp(mean_img, 0, 1) }
  for i = 1, 4 do imgs[#imgs + 1] = fdm.clamp(y[i], 0, 1) end
  local path = out .. "/mean_vs_output.png"
  fdm.io.save_grid(path, imgs, { nrow = 5, col_captions = { "train mean", "out 1", "out 2", "out 3", "out 4" },
    title = "1.2.3: the pure-noise denoiser outputs the training set's mean image" })
  print(string.format("MSE(output, training-set mean) = %.3g after %d epochs; wrote %s",
    (y - mean_img:unsqueeze(1)):square():mean():item(), run.epoch, path))
  print(EXPLANATION)
else
  -- 1.2.2: the same test images at other noise levels
  local k = math.min(2, show)
  local imgs, rows = {}, {}
  local base = clean:narrow(1, 1, k)
  local noisy, den = {}, {}
  for j, s in ipairs(sigmas) do
    local z = flow.with_rng(args.sample_seed + j, function() return flow.add_noise(base, s) end)
    noisy[j] = z
    den[j] = flow.denoise(net, on_dev(z)):to("cpu")
  end
  for i = 1, k do
    for j = 1, #sigmas do imgs[#imgs + 1] = fdm.clamp(noisy[j][i], 0, 1) end
    for j = 1, #sigmas do imgs[#imgs + 1] = fdm.clamp(den[j][i], 0, 1) end
    rows[#rows + 1] = "noisy " .. i; rows[#rows + 1] = "denoised " .. i
  end
  local cols2 = {}
  for j, s in ipairs(sigmas) do cols2[j] = string.format("s=%g", s) end
  local path = out .. "/ood_sigmas.png"
  fdm.io.save_grid(path, imgs, { nrow = #sigmas, row_captions = rows, col_captions = cols2,
    title = string.format("1.2.2 denoiser trained at sigma %g on other noise levels", args.sigma) })
  local parts = {}
  for j, s in ipairs(sigmas) do
    parts[j] = string.format("s=%g: %.4f", s, (den[j] - base):square():mean():item())
  end
  print("1.2.2 MSE(denoised, clean) per sigma: " .. table.concat(parts, ", "))
  print("wrote " .. path)
end
if args.weights then
  print(string.format("denoiser: drew the pictures of %s; outputs in %s/", args.weights, out))
else
  print(string.format("denoiser: done, %d epochs; outputs in %s/", run.epoch, out))
end
