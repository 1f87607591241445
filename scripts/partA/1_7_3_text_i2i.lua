-- Part A 1.7.3: text-conditional image-to-image: SDEdit with another prompt
-- (the test image, a 7, turned towards --prompt) at the same noise levels.
--   ./build/fdm scripts/partA/1_7_3_text_i2i.lua [--prompts "the digit three,one,eight"] [--image a.png]
-- Writes out/partA/1_7_3_text_i2i.png (one row per prompt).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local M = C.M

local args = C.parse("1_7_3_text_i2i", "Part A 1.7.3: text-conditional image-to-image", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold",
  { "prompts", "string", "the digit three,one,eight", "comma-separated prompts (one row each)" },
  { "image", "string", nil, "a PNG or JPEG instead of the MNIST test image" },
  { "i-starts", "ints", { 1, 3, 5, 7, 10, 20 }, "indices into 990, 960, ..., 0", min = 0, max = C.I_START_MAX },
}, { cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local x = args.image and M.to_model(C.load_image(args.image)) or C.test_image(1)
local prompts = C.split(args.prompts)
local rows, conds = {}, C.encode_all(model, prompts, args, true)
local uncond = table.remove(conds, 1)
for i, p in ipairs(prompts) do rows[i] = { x = x, cond = conds[i], name = C.caption(p) } end
C.save_sdedit_grid(model, rows, args, uncond, "1_7_3_text_i2i.png", string.format("text-conditional SDEdit, CFG %g", args.cfg))
