-- Part A 1.8: visual anagrams, eps = mean_k view_k^-1(eps(view_k(x_t), p_k)),
-- each term with CFG. Two illusions: "6"/"9" under rot180 (turned upside down)
-- and "2"/"5" under the course's flip (vertical mirror); --extras adds the
-- bells and whistles: rot90 ("1"/"7"), negation ("0"/"8"), jigsaw ("3"/"8").
-- --prompts p1,p2 --view V draws one illusion of your own instead.
--   ./build/fdm scripts/partA/1_8_anagrams.lua [--extras] [--prompts "6,9" --view rot180] [--n 2]
-- Writes out/partA/1_8_anagrams.png (per illusion: view 1 | view 2 for each sample).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")

local args = C.parse("1_8_anagrams", "Part A 1.8: visual anagrams with pluggable views", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold",
  { "prompts", "string", nil, "two comma-separated prompts for one illusion of your own" },
  { "view", "choice", "flip", "the second view for --prompts", choices = { "flip", "rot180", "rot90", "rot270", "negate", "jigsaw" } },
  { "extras", "flag", false, "add rot90, negation and jigsaw illusions" },
  { "n", "int", 2, "samples per illusion", min = 1 },
}, { cfg = 7 })
local model = C.load_model(args)
C.seed(args)
local illusions
if args.prompts then
  local p = C.two_prompts(args)
  illusions = { { p[1], p[2], args.view } }
else
  illusions = { { "6", "9", "rot180" }, { "2", "5", "flip" } }
  if args.extras then
    illusions[#illusions + 1] = { "1", "7", "rot90" }
    illusions[#illusions + 1] = { "0", "8", "negate" }
    illusions[#illusions + 1] = { "3", "8", "jigsaw" }
  end
end
-- stage II: each illusion once, conditioned on its upright prompt; its
-- transformed view is the view of that 256x256 result
local ims, caps, ups = {}, {}, {}
for _, il in ipairs(illusions) do
  local _, shown, entries = C.anagram(model, { il[1], il[2] }, { "identity", il[3] }, args, args.n)
  for i = 1, args.n do
    ims[#ims + 1] = shown[1]:narrow(1, i, 1); caps[#caps + 1] = C.caption(il[1]); ups[#ims] = entries[1].cond
    ims[#ims + 1] = shown[2]:narrow(1, i, 1); caps[#caps + 1] = C.caption(il[2]) .. " " .. il[3]
    ups[#ims] = { of = #ims - 1, apply = entries[2].view.apply }
  end
end
C.save_grid(C.out_file(args, "1_8_anagrams.png"), ims, { nrow = 2 * args.n, captions = caps, scale = 4, upsample = ups,
  title = string.format("visual anagrams, CFG %g, %d steps", args.cfg, args.steps) })
