-- Part A 1.9: hybrid images, eps = lowpass(eps(x_t, p1)) + highpass(eps(x_t, p2)),
-- each with CFG; highpass = eps - lowpass(eps). The low-pass is calibrated
-- for the image size (D.hybrid_filter): the course's Gaussian (kernel 33,
-- sigma 2) for 64x64 images, on 28x28 digits the DCT projection keeping the
-- 6 lowest frequencies per axis, each prompt's pass seeing the other band
-- from its own previous estimate (--isolate own; docs/partA.md). Two
-- hybrids: "0" (far) + "1" (near) and "8" (far) + "7" (near). Each row: the
-- hybrid, its low-pass (what is seen from afar) and its high-pass (+0.5) for
-- n samples.
--   ./build/fdm scripts/partA/1_9_hybrids.lua [--prompts "0,1"] [--n 2]
--     [--filter auto|gaussian|dct] [--keep 6] [--kernel 33 --sigma 2]
--     [--cfg-low G] [--cfg-high G] [--low-above T] [--isolate auto|none|far|both|own]   (variants: docs/partA.md)
-- Writes out/partA/1_9_hybrids.png.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D = C.D

local args = C.parse("1_9_hybrids", "Part A 1.9: hybrid images", {
  "seed", "steps", "cfg", "device", "model", "out", "threshold", "filter", "keep", "kernel", "sigma",
  { "prompts", "string", nil, "low-frequency prompt,high-frequency prompt (one hybrid of your own)" },
  { "n", "int", 2, "samples per hybrid", min = 1 },
  { "cfg-low", "number", nil, "CFG scale of the far (low-pass) prompt (default --cfg)" },
  { "cfg-high", "number", nil, "CFG scale of the near (high-pass) prompt (default --cfg)" },
  { "low-above", "int", nil, "timesteps t >= this take the far prompt's whole estimate", min = 0 },
  { "isolate", "choice", "auto", "what each prompt's pass sees of the other band (auto: own under 64 px, else none)",
    choices = C.ISOLATE_CHOICES },
}, { cfg = 7 })
local model = C.load_model(args)
local filter = C.hybrid_filter(args, model)
local isolate = C.hybrid_isolate(args.isolate, model)
C.seed(args)
local hybrids = { { "0", "1" }, { "8", "7" } }
if args.prompts then
  local p = C.two_prompts(args)
  hybrids = { p }
end
local all = {}
for _, h in ipairs(hybrids) do all[#all + 1] = h[1]; all[#all + 1] = h[2] end
local uncond = C.encode_all(model, all, args, true)[1]   -- every prompt in one T5 batch (IF); then from the cache
local ims, names, ups = {}, {}, {}
for _, h in ipairs(hybrids) do
  local c_far, c_near = C.encode(model, h[1], args), C.encode(model, h[2], args)
  local est = D.hybrid(model, c_far, c_near, uncond, args.cfg,
    { filter = filter, cfg_low = args.cfg_low, cfg_high = args.cfg_high,
      low_above = args.low_above, isolate = isolate })
  local x = D.sample(model, args.n, C.sampler_opts(args, { estimator = est, steps = args.steps }))
  local low = D.lowpass(x, filter)
  for i = 1, args.n do
    ims[#ims + 1] = x:narrow(1, i, 1)
    ups[#ims] = c_near   -- stage II adds detail: the hybrid on its near prompt; its bands are resized
    ims[#ims + 1] = low:narrow(1, i, 1)
    ims[#ims + 1] = (x - low):narrow(1, i, 1)   -- 0 shows as mid gray
  end
  names[#names + 1] = "far " .. C.caption(h[1]) .. " / near " .. C.caption(h[2])
end
local cols = {}
for i = 1, args.n do cols[#cols + 1] = "hybrid"; cols[#cols + 1] = "low-pass"; cols[#cols + 1] = "high-pass" end
C.save_grid(C.out_file(args, "1_9_hybrids.png"), ims, { nrow = 3 * args.n, col_captions = cols, row_captions = names,
  upsample = ups,
  scale = 3, title = string.format("hybrid images, %s%s, CFG %g far / %g near", D.filter_name(filter),
    isolate and (", isolate " .. isolate) or "", args.cfg_low or args.cfg, args.cfg_high or args.cfg) })
