-- Part A 1.7: image-to-image translation (SDEdit): noise an image to
-- strided_timesteps[i_start] and denoise it with CFG, i_start in 1, 3, 5, 7,
-- 10, 20 - on the test image and two more images (--image a.png,b.jpg: any PNG or JPEG,
-- colour or gray, any size, either polarity; default: MNIST test digits 2 and 3).
-- As in the course, each edit is conditioned on a prompt: by default
-- (--prompt auto) the image's own digit (a user image: the classifier's reading).
--   ./build/fdm scripts/partA/1_7_sdedit.lua [--image a.png,b.png] [--prompt auto] [--cfg 7]
--       [--i-starts 1,3,5,7,10,20]
-- Writes out/partA/1_7_sdedit.png (one row per image; the original last).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local M = C.M

local args = C.parse("1_7_sdedit", "Part A 1.7: SDEdit (image-to-image) at several noise levels", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold", C.IMAGE_PROMPT_OPTION,
  { "image", "string", nil, "comma-separated PNG or JPEG images (your own) shown after the test image" },
  { "i-starts", "ints", { 1, 3, 5, 7, 10, 20 }, "indices into 990, 960, ..., 0 (mapped by t for other --steps)", min = 0, max = C.I_START_MAX },
}, { cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local uncond = C.encode(model, "", args)
local x1, d1 = C.test_image(1)
local images = { { x1, "test image", d1 } }
if args.image then
  for _, p in ipairs(C.split(args.image)) do
    images[#images + 1] = { M.to_model(C.load_image(p)), p:match("([^/]*)$") }
  end
else
  for k = 2, 3 do
    local x, d = C.test_image(k)
    images[#images + 1] = { x, "MNIST test " .. k, d }
  end
end
local rows = {}
for i, im in ipairs(images) do
  local prompt, name = C.image_prompt(args, im[1], im[2], im[3])
  rows[i] = { x = im[1], cond = C.encode(model, prompt, args), name = name }
end
C.save_sdedit_grid(model, rows, args, uncond, "1_7_sdedit.png", string.format("SDEdit, %s, CFG %g", C.prompt_title(args), args.cfg))
