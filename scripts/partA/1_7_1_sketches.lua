-- Part A 1.7.1: SDEdit on a "web image" and hand-drawn sketches. The sketches
-- are strokes (polylines) rasterised a few pixels wide into 28x28; the web
-- image defaults to a synthetic dark-on-light RGB picture (written to
-- out/partA/1_7_1_web.png, then loaded like any --image: gray, resized,
-- center-cropped, inverted).
-- Each edit is conditioned on the digit the picture shows (--prompt auto; the
-- web image and --strokes are read by the classifier, --image too).
--   ./build/fdm scripts/partA/1_7_1_sketches.lua [--image web.png] [--strokes "7,6 20,6 12,23; ..."]
-- Writes out/partA/1_7_1_sketches.png.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local M = C.M
local cli = require "fdm.cli"

local args = C.parse("1_7_1_sketches", "Part A 1.7.1: SDEdit on a web image and hand-drawn sketches", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold", C.IMAGE_PROMPT_OPTION,
  { "image", "string", nil, "the web image (any PNG or JPEG); default a synthetic one" },
  { "strokes", "string", nil, "an extra sketch: polylines 'x,y x,y ...' separated by ';' (28x28 pixel units)" },
  { "width", "number", 2.6, "stroke width in pixels", min = 0.1 },
  { "i-starts", "ints", { 1, 3, 5, 7, 10, 20 }, "indices into 990, 960, ..., 0", min = 0, max = C.I_START_MAX },
}, { cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local uncond = C.encode(model, "", args)
local web = args.image or C.make_web_image(C.out_file(args, "1_7_1_web.png"))
local images = { { M.to_model(C.load_image(web)), "web: " .. web:match("([^/]*)$"), not args.image and 2 or nil } }
for _, sk in ipairs(C.SKETCHES) do
  images[#images + 1] = { M.to_model(C.render_strokes(sk.strokes, { width = args.width })), sk.name, sk.digit }
end
if args.strokes then
  local strokes, why = C.parse_strokes(args.strokes)
  if not strokes then cli.usage_error("1_7_1_sketches: --strokes: " .. why .. " (polylines 'x,y x,y ...' separated by ';')") end
  images[#images + 1] = { M.to_model(C.render_strokes(strokes, { width = args.width })),
    "sketch: --strokes" }
end
local rows = {}
for i, im in ipairs(images) do
  local prompt, name = C.image_prompt(args, im[1], im[2], im[3])
  rows[i] = { x = im[1], cond = C.encode(model, prompt, args), name = name }
end
C.save_sdedit_grid(model, rows, args, uncond, "1_7_1_sketches.png", string.format("SDEdit of sketches, %s, CFG %g", C.prompt_title(args), args.cfg))
