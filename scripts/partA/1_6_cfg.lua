-- Part A 1.6: classifier-free guidance eps = eps_u + g (eps_c - eps_u) (the
-- variance, when the model has one, from the conditional pass): 5 samples
-- without guidance and 5 with g = 7, from the same noise.
--   ./build/fdm scripts/partA/1_6_cfg.lua [--prompt "the digit three"] [--cfg 7] [--n 5]
-- Writes out/partA/1_6_cfg.png.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D = C.D
local fdm = rawget(_G, "fdm") or require "fdm"

local args = C.parse("1_6_cfg", "Part A 1.6: classifier-free guidance", {
  "seed", "prompt", "steps", "cfg", "device", "model", "out", "threshold",
  { "n", "int", 5, "samples per row", min = 1 },
}, { prompt = "the digit three", cfg = 7 })
local model = C.load_model(args)
local cond, uncond = table.unpack(C.encode_all(model, { args.prompt, "" }, args))
local rows = {}
for _, g in ipairs({ 1, args.cfg }) do
  C.seed(args)
  rows[#rows + 1] = D.sample(model, args.n, C.sampler_opts(args, { cond = cond, uncond = uncond, cfg = g, steps = args.steps }))
end
C.save_grid(C.out_file(args, "1_6_cfg.png"), rows, { nrow = args.n, scale = 4,
  row_captions = { "no CFG", string.format("CFG %g", args.cfg) },
  title = string.format("%s, %d steps, seed %d", C.caption(args.prompt), args.steps, args.seed) })
