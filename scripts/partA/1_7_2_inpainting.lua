-- Part A 1.7.2: inpainting (RePaint): after every step
-- x_t <- m x_t + (1 - m) forward(x_orig, t), m = 1 where new content goes.
-- The test image with a centre-square mask, plus image/mask pairs (--image
-- a.png,b.jpg --mask ma.png,mb.png; images and masks are PNG or JPEG, light = new content;
-- default: MNIST test digits 2 and 3 with a top-half and a right-half mask).
--   ./build/fdm scripts/partA/1_7_2_inpainting.lua [--image a.png --mask m.png] [--n 3]
-- Writes out/partA/1_7_2_inpainting.png (original, mask, masked input, n results per row).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, M = C.D, C.M

local args = C.parse("1_7_2_inpainting", "Part A 1.7.2: RePaint inpainting", {
  "seed", "prompt", "steps", "cfg", "device", "model", "out", "threshold",
  { "image", "string", nil, "comma-separated PNG or JPEG images to inpaint (after the test image)" },
  { "mask", "string", nil, "comma-separated mask images (PNG or JPEG), one per --image (light = new content)" },
  { "n", "int", 3, "results per image", min = 1 },
}, { prompt = "a handwritten digit", cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local cond, uncond = C.encode(model, args.prompt, args), C.encode(model, "", args)
local pairs_ = { { C.test_image(1), C.rect_mask(9, 20, 9, 20), "test image" } }
if args.image then
  local ims, ms = C.split(args.image), C.split(args.mask or "")
  for i, p in ipairs(ims) do
    local m = ms[i] and ms[i] ~= "" and C.load_mask(ms[i]) or C.rect_mask(9, 20, 9, 20)
    pairs_[#pairs_ + 1] = { M.to_model(C.load_image(p)), m, p:match("([^/]*)$") }
  end
else
  pairs_[#pairs_ + 1] = { C.test_image(2), C.rect_mask(1, 14, 1, 28), "MNIST 2, top half" }
  pairs_[#pairs_ + 1] = { C.test_image(3), C.rect_mask(1, 28, 15, 28), "MNIST 3, right half" }
end
local ims, names = {}, {}
for _, pr in ipairs(pairs_) do
  local x, m = pr[1], pr[2]
  local xs = x:expand(args.n, x.shape[2], x.shape[3], x.shape[4]):contiguous()
  local out = D.inpaint(model, xs, m, C.sampler_opts(args, { cond = cond, uncond = uncond, cfg = args.cfg, steps = args.steps }))
  ims[#ims + 1] = x
  ims[#ims + 1] = m * 2 - 1
  ims[#ims + 1] = x * (1 - m)   -- the new-content region shown gray
  for k = 1, args.n do ims[#ims + 1] = out:narrow(1, k, 1) end
  names[#names + 1] = pr[3]
end
local cols = { "original", "mask", "kept" }
for k = 1, args.n do cols[#cols + 1] = "inpainted " .. k end
C.save_grid(C.out_file(args, "1_7_2_inpainting.png"), ims, { nrow = 3 + args.n, col_captions = cols,
  row_captions = names, scale = 3, title = string.format("inpainting, %s, CFG %g", C.caption(args.prompt), args.cfg) })
