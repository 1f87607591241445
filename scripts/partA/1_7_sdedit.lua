-- Part A 1.7: image-to-image translation (SDEdit): noise an image to
-- strided_timesteps[i_start] and denoise it with CFG, i_start in 1, 3, 5, 7,
-- 10, 20 - on the test image and two more images (--image a.png,b.jpg: any PNG or JPEG,
-- colour or gray, any size, either polarity; default: MNIST test digits 2 and 3).
--   ./build/fdm scripts/partA/1_7_sdedit.lua [--image a.png,b.png] [--prompt ""] [--cfg 7]
--       [--i-starts 1,3,5,7,10,20]
-- Writes out/partA/1_7_sdedit.png (one row per image; the original last).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local M = C.M

local args = C.parse("1_7_sdedit", "Part A 1.7: SDEdit (image-to-image) at several noise levels", {
  "seed", "prompt", "steps", "cfg", "device", "model", "out", "threshold",
  { "image", "string", nil, "comma-separated PNG or JPEG images (your own) shown after the test image" },
  { "i-starts", "ints", { 1, 3, 5, 7, 10, 20 }, "indices into 990, 960, ..., 0 (mapped by t for other --steps)", min = 0, max = C.I_START_MAX },
}, { prompt = "a handwritten digit", cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local cond, uncond = C.encode(model, args.prompt, args), C.encode(model, "", args)
local images, names = { (C.test_image(1)) }, { "test image" }
if args.image then
  for _, p in ipairs(C.split(args.image)) do
    images[#images + 1] = M.to_model(C.load_image(p))
    names[#names + 1] = p:match("([^/]*)$")
  end
else
  for k = 2, 3 do images[#images + 1] = C.test_image(k); names[#names + 1] = "MNIST test " .. k end
end
local ims, cols = {}, nil
for _, x in ipairs(images) do
  local row, caps = C.sdedit_row(model, x, args.i_starts, args, cond, uncond)
  for _, r in ipairs(row) do ims[#ims + 1] = r end
  cols = caps
end
C.save_grid(C.out_file(args, "1_7_sdedit.png"), ims, { nrow = #cols, col_captions = cols, row_captions = names,
  scale = 3, title = string.format("SDEdit, %s, CFG %g", C.caption(args.prompt), args.cfg) })
