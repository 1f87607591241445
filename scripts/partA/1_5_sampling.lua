-- Part A 1.5: 5 samples from pure noise (i_start = 0) with a weak prompt
-- ("a handwritten digit" = the unconditional prompt), no guidance by default.
--   ./build/fdm scripts/partA/1_5_sampling.lua [--prompt "a handwritten digit"] [--n 5] [--cfg 1]
-- Writes out/partA/1_5_sampling.png.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D = C.D

local args = C.parse("1_5_sampling", "Part A 1.5: sampling from pure noise", {
  "seed", "prompt", "steps", "cfg", "device", "model", "out", "threshold",
  { "n", "int", 5, "samples", min = 1 },
}, { prompt = "a handwritten digit", cfg = 1 })
local model = C.load_model(args)
C.seed(args)
local x = D.sample(model, args.n, C.sampler_opts(args, { cond = C.encode(model, args.prompt, args),
  uncond = C.encode(model, "", args), cfg = args.cfg, steps = args.steps }))
local caps = {}
for i = 1, args.n do caps[i] = "sample " .. i end
C.save_grid(C.out_file(args, "1_5_sampling.png"), { x }, { nrow = args.n, captions = caps, scale = 4,
  title = string.format("%s, CFG %g, %d steps, seed %d", C.caption(args.prompt), args.cfg, args.steps, args.seed) })
