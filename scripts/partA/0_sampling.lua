-- Part A 0: sample from prompts at several step counts with a fixed, printed
-- seed (the same seed, hence the same starting noise, for every step count).
--   ./build/fdm scripts/partA/0_sampling.lua [--prompts "a 3,seven,the digit nine"]
--       [--step-counts 20,50,100] [--n 2] [--cfg 7] [--seed 180]
-- Writes out/partA/0_sampling.png (rows: step counts; columns: prompts x samples).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, fdm = C.D, rawget(_G, "fdm") or require "fdm"

local args = C.parse("0_sampling", "Part A 0: sampling at 20, 50 and 100 steps with a fixed seed", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold",
  { "prompts", "string", "a 3,seven,the digit nine", "comma-separated prompts" },
  { "step-counts", "ints", { 20, 50, 100 }, "step counts to compare (--steps N alone runs only N)", min = 2, max = 1000 },
  { "n", "int", 2, "samples per prompt", min = 1 },
})
local counts = args.given.steps and { args.steps } or args.step_counts
local model = C.load_model(args)
local prompts = C.split(args.prompts)
local conds = C.encode_all(model, prompts, args, true)
local uncond = table.remove(conds, 1)
local cond = fdm.cat((function()
  local l = {}
  for i = 1, #prompts do l[i] = C.expand_cond(conds[i], args.n) end
  return l
end)(), 1)

local rows, row_caps = {}, {}
local clock = C.timer()
for _, steps in ipairs(counts) do
  C.seed(args)   -- reused for every step count
  local x = D.sample(model, #prompts * args.n, C.sampler_opts(args, {
    cond = cond, uncond = uncond, cfg = args.cfg, steps = steps }))
  rows[#rows + 1] = x
  row_caps[#row_caps + 1] = steps .. " steps"
end
local caps = {}
for _, p in ipairs(prompts) do for _ = 1, args.n do caps[#caps + 1] = C.caption(p) end end
local path = C.out_file(args, "0_sampling.png")
local ups = {}   -- stage II: every image with its own prompt
for i = 1, #rows do ups[i] = cond end
C.save_grid(path, rows, { nrow = #prompts * args.n, row_captions = row_caps, col_captions = caps, upsample = ups,
  title = string.format("samples, seed %d, CFG %g", args.seed, args.cfg) })
print(string.format("seed %d reused for %s steps (%.1f s)", args.seed, table.concat(counts, "/"), clock()))
