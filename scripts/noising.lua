-- noising.lua: Part B 1.2 of shared/spec/fun-with-diffusion.md: the noising
-- process z = x + sigma eps on MNIST digits (x in [0,1]), for
-- sigma = 0, .2, .4, .5, .6, .8, 1.0. Writes out/noising/noising.png (one row
-- per digit, one column per sigma; pixels clipped to [0,1] for display).
local cli = require "fdm.cli"
local train = require "fdm.train"

local spec = {
  name = "noising", summary = "visualize z = x + sigma eps (Part B 1.2)",
  common = { "seed", "subset", "dataset", "out" },
  options = {
    { "sigmas", "numbers", { 0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0 }, "noise levels", min = 0 },
    { "show", "int", 5, "digits shown (rows)", min = 1 },
    { "split", "choice", "train", "which split the digits come from", choices = { "train", "test" } },
  },
}
local args = cli.parse_or_exit(arg, spec)
fdm.manual_seed(args.seed)
local sigmas = args.sigmas
local ds = train.load_data(args, args.split)
local k = math.min(args.show, ds.n)
local x = ds.images:narrow(1, 1, k)
local labels = ds.labels:narrow(1, 1, k):tolist()
local imgs, rows, cols = {}, {}, {}
local eps = fdm.randn_like(x)                     -- the same noise at every sigma
for i = 1, k do
  for j, s in ipairs(sigmas) do imgs[#imgs + 1] = fdm.clamp(x[i] + eps[i] * s, 0, 1) end
  rows[i] = "label " .. labels[i]
end
for j, s in ipairs(sigmas) do cols[j] = string.format("sigma %g", s) end
train.mkdir(args.out)
local path = args.out .. "/noising.png"
fdm.io.save_grid(path, imgs, { nrow = #sigmas, row_captions = rows, col_captions = cols,
  title = "1.2: z = x + sigma * eps (clipped to [0,1] for display)" })
print("wrote " .. path)
