-- Part A 1.4: iterative denoising of the test image noised to
-- strided_timesteps[i_start] (i_start = 10: t = 690), every 5th step shown,
-- compared with one-step denoising and a Gaussian blur of the same x_t; an
-- animated GIF of the whole trajectory.
--   ./build/fdm scripts/partA/1_4_iterative.lua [--i-start 10] [--every 5] [--prompt "a 7"] [--cfg 1]
-- Writes out/partA/1_4_iterative.png and out/partA/1_4_iterative.gif.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, M = C.D, C.M
local fdm = rawget(_G, "fdm") or require "fdm"

local args = C.parse("1_4_iterative", "Part A 1.4: iterative denoising vs one-step vs blur", {
  "seed", "prompt", "steps", "cfg", "device", "model", "out", "threshold",
  { "i-start", "int", 10, "index into 990, 960, ..., 0 (10: t = 690; mapped by t for other --steps)", min = 0, max = C.I_START_MAX },
  { "every", "int", 5, "show every k-th step", min = 1 },
  { "image", "string", nil, "a PNG or JPEG to use instead of the MNIST test image" },
}, { prompt = "a 7", cfg = 1 })
local model = C.load_model(args)
C.seed(args)
local x0 = args.image and M.to_model(C.load_image(args.image)) or C.test_image(1)
local ts = C.timesteps(args)
local i_start = C.index_for_course(ts, args.i_start)
local cond, uncond = C.encode(model, args.prompt, args), C.encode(model, "", args)
local t0 = ts[i_start + 1]
local xt = D.forward(model, x0, t0)

local s = D.Sampler(model, C.sampler_opts(args, { x = xt, timesteps = ts, i_start = i_start,
  cond = cond, uncond = uncond, cfg = args.cfg }))
local shown, shown_caps = { xt }, { "t = " .. t0 }
local gif = { xt }
s:add_hook(function(smp, ev)
  gif[#gif + 1] = ev.x
  if (ev.i - i_start) % args.every == 0 and not ev.last then
    shown[#shown + 1] = ev.x
    shown_caps[#shown_caps + 1] = "t = " .. ev.t
  end
end)
local iterative = s:run()
shown[#shown + 1] = iterative
shown_caps[#shown_caps + 1] = "t = 0"
local one = D.one_step_denoise(model, xt, t0, cond, { uncond = uncond, cfg = args.cfg })
local blur = fdm.F.gaussian_blur(xt, 5, 1.5)
-- stage II: the denoised results; the noisy frames, the original and the blur are resized
local ims, caps, ups = {}, {}, {}
for i, x in ipairs(shown) do ims[i], caps[i], ups[i] = x, shown_caps[i], i == #shown and cond end
for _, e in ipairs({ { x0, "original" }, { iterative, "iterative", cond }, { one, "one-step", cond }, { blur, "blur k5 s1.5" } }) do
  local k = #ims + 1
  ims[k], caps[k], ups[k] = e[1], e[2], e[3] or false
end
C.save_grid(C.out_file(args, "1_4_iterative.png"), ims, { nrow = #shown, captions = caps, scale = 3, upsample = ups,
  title = string.format("from t = %d, %s, CFG %g", t0, C.caption(args.prompt), args.cfg) })
C.write_gif(C.out_file(args, "1_4_iterative.gif"), gif, { delay_ms = 150 })
