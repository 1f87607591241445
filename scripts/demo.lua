-- demo.lua: flow matching on a 2-D toy distribution, end to end in ~40 s on
-- two CPU cores. Trains an MLP velocity field u(x, t) to carry Gaussian noise
-- to a ring of eight Gaussians, samples it with Euler steps, and writes
--   out/demo.png       data | samples | the flow at a few times (captioned)
--   out/demo_loss.png  the training loss curve (log scale)
-- Usage: fdm scripts/demo.lua [--steps N] [--seed S] [--batch N] [--lr X] [--euler N] [--out DIR] (--help)
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local nn, F = fdm.nn, fdm.F

local opts = cli.parse_or_exit(arg, {
  name = "demo", common = false,
  summary = "flow matching on a 2-D toy (eight Gaussians on a ring), end to end in about 40 s",
  options = {
    { "steps", "int", 5000, "training steps", min = 1 },
    { "seed", "int", 101, "random seed" },
    { "batch", "int", 512, "batch size", min = 1 },
    { "lr", "number", 3e-3, "learning rate (Adam, cosine-annealed to 1e-4)", min = 0 },
    { "euler", "int", 100, "Euler steps of the sampler", min = 4 },
    { "out", "string", "out", "output folder (demo.png, demo_loss.png)" },
    { "device", "choice", "auto", "where the model runs (auto: the GPU when there is one; FDM_DEVICE sets the default)",
      choices = { "auto", "cpu", "cuda" } },
  },
})
fdm.manual_seed(opts.seed)
fdm.set_default_device(opts.device)   -- every tensor below is made there
print(("demo: flow matching on eight Gaussians, seed %d, %d steps"):format(opts.seed, opts.steps))

-- eight Gaussian blobs on a ring of radius 0.8
local function ring_of_gaussians(n)
  local k = fdm.randint(0, 8, { n, 1 }):float() * (2 * math.pi / 8)
  local x = fdm.cat({ k:cos(), k:sin() }, 2) * 0.8
  return x + fdm.randn(n, 2) * 0.05
end

local model = nn.Sequential(
  nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(),
  nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2)):to(opts.device)
local opt = fdm.optim.Adam(model:parameters(), { lr = opts.lr })
local sched = fdm.optim.CosineAnnealingLR(opt, opts.steps, 1e-4)

local losses = {}
local bar = fdm.progress.bar { total = opts.steps, desc = "train" }
for step = 1, opts.steps do
  local x1 = ring_of_gaussians(opts.batch)
  local x0 = fdm.randn(opts.batch, 2)
  local t = fdm.rand(opts.batch, 1)
  local xt = x0 * (1 - t) + x1 * t                               -- the straight path
  local pred = model(fdm.cat({ xt, t }, 2))
  local loss = F.mse_loss(pred, x1 - x0)                          -- target velocity
  opt:zero_grad()
  loss:backward()
  opt:step()
  sched:step()
  losses[#losses + 1] = loss:item()
  bar:update(1, { loss = ("%.4f"):format(losses[#losses]) })
end
bar:close()

-- Euler integration from noise, keeping a few snapshots
local function density(points, size)        -- 2-D histogram as a [1, size, size] image
  size = size or 96
  local img = fdm.zeros(size * size)
  local p = points:tolist()
  local v = img:tolist()
  for _, xy in ipairs(p) do
    local i = math.floor((xy[1] + 1.2) / 2.4 * size)
    local j = math.floor((1.2 - xy[2]) / 2.4 * size)
    if i >= 0 and i < size and j >= 0 and j < size then v[j * size + i + 1] = v[j * size + i + 1] + 1 end
  end
  local t = fdm.tensor(v):view(1, size, size)
  return (t / math.max(t:max():item(), 1)):sqrt()                -- sqrt: show the thin tails too
end

local n = 6000
local frames, captions = {}, {}
model:eval()
fdm.no_grad(function()
  local x = fdm.randn(n, 2)
  local T = opts.euler
  for i = 0, T - 1 do
    if i % (T // 4) == 0 then
      frames[#frames + 1] = density(x); captions[#captions + 1] = ("t = %.2f"):format(i / T)
    end
    local t = fdm.full({ n, 1 }, i / T)
    x = x + model(fdm.cat({ x, t }, 2)) / T
  end
  frames[#frames + 1] = density(x); captions[#captions + 1] = "samples (t = 1)"
end)
frames[#frames + 1] = density(ring_of_gaussians(n)); captions[#captions + 1] = "data"

os.execute("mkdir -p '" .. opts.out:gsub("'", "'\\''") .. "'")
fdm.io.save_grid(opts.out .. "/demo.png", fdm.stack(frames), { nrow = #frames, captions = captions,
  title = "flow matching: noise -> eight Gaussians (Euler, " .. opts.euler .. " steps)" })
fdm.io.plot_curves(opts.out .. "/demo_loss.png", { { name = "flow-matching loss", y = losses } },
  { logy = true, title = "training loss", xlabel = "step", ylabel = "MSE" })
print(("final loss %.4f; wrote %s/demo.png and %s/demo_loss.png"):format(losses[#losses], opts.out, opts.out))
