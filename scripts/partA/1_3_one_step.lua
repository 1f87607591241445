-- Part A 1.3: one-step denoising x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
-- of the noisy test image at t = 250, 500, 750 (no guidance by default).
--   ./build/fdm scripts/partA/1_3_one_step.lua [--prompt "a 7"] [--cfg 1] [--ts 250,500,750]
-- Writes out/partA/1_3_one_step.png (rows: original, noisy, estimate).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, M = C.D, C.M

local args = C.parse("1_3_one_step", "Part A 1.3: one-step denoising with the model", {
  "seed", "prompt", "cfg", "device", "model", "out",
  { "ts", "ints", { 250, 500, 750 }, "timesteps", min = 0, max = 999 },
  { "image", "string", nil, "a PNG or JPEG to use instead of the MNIST test image" },
}, { prompt = "a 7", cfg = 1 })
local model = C.load_model(args)
C.seed(args)
local x0 = args.image and M.to_model(C.load_image(args.image)) or C.test_image(1)
local cond, uncond = C.encode(model, args.prompt, args), C.encode(model, "", args)
local row1, row2, row3, caps = {}, {}, {}, {}
for _, t in ipairs(args.ts) do
  local xt = D.forward(model, x0, t)
  local x0_hat = D.one_step_denoise(model, xt, t, cond, { uncond = uncond, cfg = args.cfg })
  row1[#row1 + 1], row2[#row2 + 1], row3[#row3 + 1] = x0, xt, x0_hat
  caps[#caps + 1] = "t = " .. t
end
local ims, ups = {}, {}
for ri, r in ipairs({ row1, row2, row3 }) do
  for _, x in ipairs(r) do
    ims[#ims + 1] = x
    ups[#ims] = ri == 3 and cond   -- stage II: the estimates; the originals and noisy images are resized
  end
end
C.save_grid(C.out_file(args, "1_3_one_step.png"), ims, { nrow = #args.ts, col_captions = caps,
  row_captions = { "original", "noisy", "one-step" }, scale = 4, upsample = ups,
  title = string.format("one-step denoising, prompt %s, CFG %g", C.caption(args.prompt), args.cfg) })
