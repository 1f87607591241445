-- Part A 1.7.2: inpainting (RePaint): after every step
-- x_t <- m x_t + (1 - m) forward(x_orig, t), m = 1 where new content goes.
-- The test image with a centre-square mask, plus image/mask pairs (--image
-- a.png,b.jpg --mask ma.png,mb.png; images and masks are PNG or JPEG, light = new content;
-- default: MNIST test digits 2 and 3 with a top-half and a right-half mask).
-- The new content is conditioned on the image's digit (--prompt auto; a user
-- image: the classifier's reading of it).
--   ./build/fdm scripts/partA/1_7_2_inpainting.lua [--image a.png --mask m.png] [--n 3]
-- Writes out/partA/1_7_2_inpainting.png (original, mask, masked input, n results per row).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, M = C.D, C.M
local cli = require "fdm.cli"

local args = C.parse("1_7_2_inpainting", "Part A 1.7.2: RePaint inpainting", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold", C.IMAGE_PROMPT_OPTION,
  { "image", "string", nil, "comma-separated PNG or JPEG images to inpaint (after the test image)" },
  { "mask", "string", nil, "comma-separated mask images (PNG or JPEG), one per --image (light = new content)" },
  { "n", "int", 3, "results per image", min = 1 },
}, { cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local uncond = C.encode(model, "", args)
local x1, d1 = C.test_image(1)
local pairs_ = { { x1, C.rect_mask(9, 20, 9, 20), "test image", d1 } }
if args.mask and not args.image then
  cli.usage_error("1_7_2_inpainting: --mask needs --image (one mask per image)")
end
if args.image then
  local ims, ms = C.split(args.image), C.split(args.mask or "")
  if args.mask and #ms ~= #ims then   -- a mask for the wrong image would not be noticed
    cli.usage_error(("1_7_2_inpainting: %d images but %d masks (one --mask per --image, in the same order; " ..
      "without --mask each image gets the default square)"):format(#ims, #ms))
  end
  for i, p in ipairs(ims) do
    local m = ms[i] and ms[i] ~= "" and C.load_mask(ms[i]) or C.rect_mask(9, 20, 9, 20)
    pairs_[#pairs_ + 1] = { M.to_model(C.load_image(p)), m, p:match("([^/]*)$") }
  end
else
  local x2, d2 = C.test_image(2)
  local x3, d3 = C.test_image(3)
  pairs_[#pairs_ + 1] = { x2, C.rect_mask(1, 14, 1, 28), "MNIST 2, top half", d2 }
  pairs_[#pairs_ + 1] = { x3, C.rect_mask(1, 28, 15, 28), "MNIST 3, right half", d3 }
end
local ims, names, ups = {}, {}, {}
for i, pr in ipairs(pairs_) do
  local x, m = pr[1], pr[2]
  local prompt
  prompt, names[i] = C.image_prompt(args, x, pr[3], pr[4])
  local xs = x:expand(args.n, x.shape[2], x.shape[3], x.shape[4]):contiguous()
  local cond = C.encode(model, prompt, args)
  local out = D.inpaint(model, xs, m, C.sampler_opts(args, { cond = cond, uncond = uncond,
    cfg = args.cfg, steps = args.steps }))
  ims[#ims + 1] = x
  ims[#ims + 1] = m * 2 - 1
  ims[#ims + 1] = x * (1 - m)   -- the new-content region shown gray
  for k = 1, args.n do
    ims[#ims + 1] = out:narrow(1, k, 1)
    ups[#ims] = cond   -- stage II: the results; the original, mask and kept part are resized
  end
end
local cols = { "original", "mask", "kept" }
for k = 1, args.n do cols[#cols + 1] = "inpainted " .. k end
C.save_grid(C.out_file(args, "1_7_2_inpainting.png"), ims, { nrow = 3 + args.n, col_captions = cols,
  row_captions = names, scale = 3, upsample = ups,
  title = string.format("inpainting, %s, CFG %g", C.prompt_title(args), args.cfg) })
