-- flow_class.lua: class-conditioned flow matching with classifier-free
-- guidance on MNIST (Part B 2.4-2.6 of shared/spec/fun-with-diffusion.md).
--   ClassConditionalUNet D 64: u0 = fc1_c(c) * u0 + fc1_t(t), up1 = fc2_c(c) * up1 + fc2_t(t)
--   c one-hot, zeroed with probability 0.1 in training (--p-uncond)
--   batch 64, Adam lr 1e-2, ExponentialLR gamma = 0.1^(1/epochs) per epoch, 10 epochs
--   sampling (2.6): u = u_uncond + g (u_cond - u_uncond), g = 5 (--cfg), c = 0
--   for the unconditional pass; T = 300 Euler steps; 4 samples of every digit
--   after epochs 1, 5 and 10 (the same noise each time)
--   2.6+: --no-scheduler trains at a constant learning rate, 1e-3 unless
--   --lr is given: the compensation measured in docs/partb.md
-- Writes out/flow_class/ (out/flow_class_nosched/ with --no-scheduler):
-- loss.png, samples_epochNN.png, samples.png, checkpoint.safetensors, model.safetensors.
local cli = require "fdm.cli"
local train = require "fdm.train"
local flow = require "fdm.flow"
local unet = require "fdm.unet"

local NOSCHED_LR = 1e-3

local options = {
  { "per-digit", "int", 4, "samples of every digit after each milestone epoch", min = 1 },
  { "sample-epochs", "ints", {}, "epochs after which to sample (default 1, epochs/2, epochs)" },
  { "p-uncond", "number", 0.1, "probability of dropping the class in training", min = 0, max = 1 },
  { "no-scheduler", "flag", false, "2.6+: train without the ExponentialLR scheduler, at a constant lr (1e-3 unless --lr is given)" },
}
for _, o in ipairs(train.OPTIONS) do options[#options + 1] = o end
local spec = {
  name = "flow_class", summary = "class-conditioned flow matching with CFG on MNIST (Part B 2.4-2.6)",
  common = { "steps", "cfg", table.unpack(train.COMMON) },
  defaults = { epochs = 10, batch = 64, lr = 1e-2, hidden = 64, steps = 300, cfg = 5 },
  options = options,
}
local args = cli.parse_or_exit(arg, spec)
if args.no_scheduler and not args.given.out then args.out = "out/flow_class_nosched" end
-- 2.6+'s compensation, measured on the full recipe (docs/partb.md): a constant
-- 1e-3 matches the scheduled recipe's quality; a constant 1e-2 does not
if args.no_scheduler and not args.given.lr then args.lr = NOSCHED_LR end
print("flow_class: " .. cli.describe(args, spec))
fdm.manual_seed(args.seed)

local ds = train.load_data(args, "train")
local loader = train.loader(ds, { batch = args.batch, shuffle = true })
local net = unet.ClassConditionalUNet(1, args.hidden, 10)
if args.device ~= "cpu" then net:to(args.device) end
print(string.format("ClassConditionalUNet D=%d: %d parameters; %d training images (%s), %d batches of %d per epoch",
  args.hidden, net:num_parameters(), ds.n, args.dataset, #loader, args.batch))
local opt = fdm.optim.Adam(net:parameters(), { lr = args.lr })
local sched
if args.no_scheduler then
  print("2.6+: no learning-rate scheduler (constant lr " .. args.lr ..
    (args.given.lr and ")" or ", the measured compensation; --lr to change it)"))
else
  sched = fdm.optim.ExponentialLR(opt, 0.1 ^ (1 / args.epochs))
end

local milestones, is_milestone = train.milestones(args.epochs, args.sample_epochs)
local out = args.out
train.mkdir(out)
local per = args.per_digit
-- labels laid out as `per` rows of the digits 0..9
local labels = {}
for r = 1, per do for d = 0, 9 do labels[#labels + 1] = d end end
local digits = {}
for d = 0, 9 do digits[d + 1] = tostring(d) end

local function sample_file(epoch) return string.format("%s/samples_epoch%02d", out, epoch) end

local function combined()
  train.samples_overview(out, milestones, 10, { col_captions = digits,
    title = string.format("class-conditioned flow, CFG %g, T=%d: one sample per digit after each epoch", args.cfg, args.steps) })
end

local run = train.run {
  args = args, name = "flow_class", out = out, model = net, optimizer = opt, scheduler = sched,
  loader = loader, full_images = 60000,
  meta = { hidden = args.hidden, batch = args.batch, lr = args.lr, dataset = args.dataset,
           subset = args.subset, seed = args.seed, scheduler = tostring(not args.no_scheduler),
           p_uncond = args.p_uncond, model = "ClassConditionalUNet",
           ["fdm.kind"] = "flow_class", ["fdm.architecture"] = "ClassConditionalUNet",
           ["fdm.in_channels"] = 1, ["fdm.hidden"] = args.hidden, ["fdm.num_classes"] = 10 },
  loss = function(x, y) return flow.class_loss(net, x, y, args.p_uncond, 10) end,
  after_epoch = function(epoch)
    if not is_milestone[epoch] then return end
    local t0 = fdm.time()
    local x = flow.with_rng(args.sample_seed, function()
      return flow.sample_class(net, labels, { steps = args.steps, guidance = args.cfg, device = args.device,
                                                graph = args.graph })
    end)
    x = fdm.clamp(x, 0, 1):to("cpu")
    fdm.io.save_safetensors(sample_file(epoch) .. ".safetensors", { samples = x })
    local rows = {}
    for r = 1, per do rows[r] = "#" .. r end
    fdm.io.save_grid(sample_file(epoch) .. ".png", x, { nrow = 10, row_captions = rows, col_captions = digits,
      title = string.format("class-conditioned flow%s, epoch %d, CFG %g, T=%d",
        args.no_scheduler and " (no scheduler)" or "", epoch, args.cfg, args.steps) })
    print(string.format("  sampled %d images (CFG %g, T=%d) in %s: wrote %s.png", #labels, args.cfg, args.steps,
      train.fmt_time(fdm.time() - t0), sample_file(epoch)))
    combined()
  end,
}
if not run.stopped then print(string.format("flow_class: done, %d epochs; outputs in %s/ (loss.png, samples*.png, model.safetensors)", run.epoch, out)) end
