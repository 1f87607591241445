-- flow_time.lua: time-conditioned flow matching on MNIST (Part B 2.1-2.3 of
-- shared/spec/fun-with-diffusion.md).
--   x_t = (1-t) x0 + t x1, x0 ~ N(0,I), x1 data, t ~ U[0,1]; target u = x1 - x0
--   TimeConditionalUNet D 64, batch 64, Adam lr 1e-2, ExponentialLR
--   gamma = 0.1^(1/epochs) stepped per epoch, 10 epochs
--   sampling (2.3): x ~ N(0,I); for i = 0..T-1: x += u(x, i/T) / T, T = 300,
--   after epochs 1, 5 and 10 (the same noise each time)
-- Writes out/flow_time/: loss.png, samples_epochNN.png, samples.png (all
-- milestones), checkpoint.safetensors (every epoch), model.safetensors.
-- Usage: fdm scripts/flow_time.lua [--epochs 10] [--subset N] [--hidden 64] [--resume] ... (--help)
local cli = require "fdm.cli"
local train = require "fdm.train"
local flow = require "fdm.flow"
local unet = require "fdm.unet"

local options = {
  { "samples", "int", 40, "samples drawn after each milestone epoch", min = 1 },
  { "sample-epochs", "ints", {}, "epochs after which to sample (default 1, epochs/2, epochs)" },
  { "no-scheduler", "flag", false, "train without the ExponentialLR scheduler" },
}
for _, o in ipairs(train.OPTIONS) do options[#options + 1] = o end
local spec = {
  name = "flow_time", summary = "time-conditioned flow matching on MNIST (Part B 2.1-2.3)",
  common = { "steps", table.unpack(train.COMMON) },   -- all but --cfg
  defaults = { epochs = 10, batch = 64, lr = 1e-2, hidden = 64, steps = 300 },
  options = options,
}
local args = cli.parse_or_exit(arg, spec)
print("flow_time: " .. cli.describe(args, spec))
fdm.manual_seed(args.seed)

local ds = train.load_data(args, "train")
local loader = train.loader(ds, { batch = args.batch, shuffle = true })
local net = unet.TimeConditionalUNet(1, args.hidden)
if args.device ~= "cpu" then net:to(args.device) end
print(string.format("TimeConditionalUNet D=%d: %d parameters; %d training images (%s), %d batches of %d per epoch",
  args.hidden, net:num_parameters(), ds.n, args.dataset, #loader, args.batch))
local opt = fdm.optim.Adam(net:parameters(), { lr = args.lr })
local sched
if not args.no_scheduler then sched = fdm.optim.ExponentialLR(opt, 0.1 ^ (1 / args.epochs)) end

local milestones, is_milestone = train.milestones(args.epochs, args.sample_epochs)
local out = args.out
train.mkdir(out)

local function sample_file(epoch) return string.format("%s/samples_epoch%02d", out, epoch) end

local function combined()
  train.samples_overview(out, milestones, math.min(10, args.samples), {
    title = string.format("flow matching (time): Euler T=%d, same noise after each epoch", args.steps) })
end

local run = train.run {
  args = args, name = "flow_time", model = net, optimizer = opt, scheduler = sched,
  loader = loader, full_images = 60000,
  meta = { hidden = args.hidden, batch = args.batch, lr = args.lr, dataset = args.dataset,
           subset = args.subset, seed = args.seed, scheduler = tostring(not args.no_scheduler),
           model = "TimeConditionalUNet",
           ["fdm.kind"] = "flow_time", ["fdm.architecture"] = "TimeConditionalUNet",
           ["fdm.in_channels"] = 1, ["fdm.hidden"] = args.hidden },
  loss = function(x) return flow.time_loss(net, x) end,
  after_epoch = function(epoch)
    if not is_milestone[epoch] then return end
    local t0 = fdm.time()
    local x = flow.with_rng(args.sample_seed, function()
      return flow.sample_time(net, args.samples, { steps = args.steps, device = args.device, graph = args.graph })
    end)
    x = fdm.clamp(x, 0, 1):to("cpu")
    fdm.io.save_safetensors(sample_file(epoch) .. ".safetensors", { samples = x })
    local rows = {}
    for r = 1, math.ceil(args.samples / 10) do rows[r] = "#" .. ((r - 1) * 10 + 1) end
    fdm.io.save_grid(sample_file(epoch) .. ".png", x, { nrow = 10, row_captions = rows,
      title = string.format("time-conditioned flow matching, epoch %d, Euler T=%d", epoch, args.steps) })
    print(string.format("  sampled %d images with T=%d in %s: wrote %s.png", args.samples, args.steps,
      train.fmt_time(fdm.time() - t0), sample_file(epoch)))
    combined()
  end,
}
if not run.stopped then print(string.format("flow_time: done, %d epochs; outputs in %s/ (loss.png, samples*.png, model.safetensors)", run.epoch, out)) end
