-- Part A 1.7.1: SDEdit on a "web image" and hand-drawn sketches. The sketches
-- are strokes (polylines) rasterised a few pixels wide into 28x28; the web
-- image defaults to a synthetic dark-on-light RGB picture (written to
-- out/partA/1_7_1_web.png, then loaded like any --image: gray, resized,
-- center-cropped, inverted).
--   ./build/fdm scripts/partA/1_7_1_sketches.lua [--image web.png] [--strokes "7,6 20,6 12,23; ..."]
-- Writes out/partA/1_7_1_sketches.png.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local M = C.M

local args = C.parse("1_7_1_sketches", "Part A 1.7.1: SDEdit on a web image and hand-drawn sketches", {
  "seed", "prompt", "steps", "cfg", "device", "model", "out", "threshold",
  { "image", "string", nil, "the web image (any PNG or JPEG); default a synthetic one" },
  { "strokes", "string", nil, "an extra sketch: polylines 'x,y x,y ...' separated by ';' (28x28 pixel units)" },
  { "width", "number", 2.6, "stroke width in pixels" },
  { "i-starts", "ints", { 1, 3, 5, 7, 10, 20 }, "indices into 990, 960, ..., 0", min = 0, max = C.I_START_MAX },
}, { prompt = "a handwritten digit", cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local cond, uncond = C.encode(model, args.prompt, args), C.encode(model, "", args)
local web = args.image or C.make_web_image(C.out_file(args, "1_7_1_web.png"))
local images, names = { M.to_model(C.load_image(web)) }, { "web: " .. web:match("([^/]*)$") }
for _, sk in ipairs(C.SKETCHES) do
  images[#images + 1] = M.to_model(C.render_strokes(sk.strokes, { width = args.width }))
  names[#names + 1] = sk.name
end
if args.strokes then
  images[#images + 1] = M.to_model(C.render_strokes(C.parse_strokes(args.strokes), { width = args.width }))
  names[#names + 1] = "sketch: --strokes"
end
local ims, cols = {}, nil
for _, x in ipairs(images) do
  local row, caps = C.sdedit_row(model, x, args.i_starts, args, cond, uncond)
  for _, r in ipairs(row) do ims[#ims + 1] = r end
  cols = caps
end
C.save_grid(C.out_file(args, "1_7_1_sketches.png"), ims, { nrow = #cols, col_captions = cols, row_captions = names,
  scale = 3, title = string.format("SDEdit of sketches, %s, CFG %g", C.caption(args.prompt), args.cfg) })
