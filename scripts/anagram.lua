-- Visual anagrams, the main Part A demo: one image that shows --prompts[1]
-- upright and --prompts[2] under --view.
--   eps = (eps(x_t, p1) + view^-1(eps(view(x_t), p2))) / 2, each term with CFG
-- Default: "2" upright and "7" under the course's vertical flip. Real digits
-- do not do this (1 % of real 2s read as a 7 when flipped), and 96 % of the
-- shipped DDPM's anagrams read both ways (docs/partA.md, "The main demo").
-- rot180, rot90, rot270, negate and jigsaw are the other views.
--   ./build/fdm scripts/anagram.lua [--prompts "2,7"] [--view flip] [--n 3] [--steps 20]
--       [--cfg 7] [--seed 180] [--model weights/ddpm_mnist.safetensors] [--out out/anagram.png]
-- Writes out/anagram.png: each illusion upright (captioned with prompt 1) and
-- transformed (captioned with prompt 2). Takes a few seconds on a CPU.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local C = dofile(here .. "/partA/common.lua")
local fdm = rawget(_G, "fdm") or require "fdm"

local args = C.parse("anagram", "visual anagrams: an image that reads as prompt 1 upright and prompt 2 transformed", {
  "seed", "steps", "cfg", "device", "model", "threshold",
  { "prompts", "string", C.ANAGRAM_DEFAULT.prompts, "two comma-separated prompts: upright, transformed" },
  { "view", "choice", C.ANAGRAM_DEFAULT.view, "the second view", choices = { "flip", "rot180", "rot90", "rot270", "negate", "jigsaw" } },
  { "n", "int", 3, "illusions to draw", min = 1 },
  { "out", "string", "out/anagram.png", "output PNG" },
}, { steps = 20, cfg = 7 }, "scripts/anagram.lua")
local clock = C.timer()
local prompts = C.two_prompts(args)
local model = C.load_model(args)
C.seed(args)
local _, shown = C.anagram(model, prompts, { "identity", args.view }, args, args.n)
local ims, caps = {}, {}
for i = 1, args.n do
  ims[#ims + 1] = shown[1]:narrow(1, i, 1); caps[#caps + 1] = C.caption(prompts[1])
  ims[#ims + 1] = shown[2]:narrow(1, i, 1); caps[#caps + 1] = C.caption(prompts[2]) .. " (" .. args.view .. ")"
end
local dir = args.out:match("^(.*)/[^/]*$")
if dir then C.mkdir(dir) end
C.save_grid(args.out, ims, { nrow = 2, captions = caps, scale = 5,
  title = string.format("visual anagram, CFG %g", args.cfg) })
print(string.format("seed %d, %d steps, %.1f s", args.seed, args.steps, clock()))
