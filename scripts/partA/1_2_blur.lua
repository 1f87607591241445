-- Part A 1.2: classical denoising - a Gaussian blur of each noisy image of 1.1.
--   ./build/fdm scripts/partA/1_2_blur.lua [--ts 250,500,750] [--kernel 5] [--sigma 1.5]
-- Writes out/partA/1_2_blur.png (row 1: noisy, row 2: blurred).
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, M = C.D, C.M
local fdm = rawget(_G, "fdm") or require "fdm"

local args = C.parse("1_2_blur", "Part A 1.2: Gaussian-blur denoising of the noisy test image", {
  "seed", "device", "model", "out",
  { "ts", "ints", { 250, 500, 750 }, "timesteps", min = 0, max = 999 },
  { "kernel", "int", 5, "Gaussian kernel size (odd)", min = 1 },
  { "sigma", "number", 1.5, "Gaussian sigma (pixels)", min = 1e-3 },
  { "image", "string", nil, "a PNG or JPEG to use instead of the MNIST test image" },
})
local model = C.load_model(args)
C.seed(args)
local x0 = args.image and M.to_model(C.load_image(args.image)) or C.test_image(1)
C.check_gaussian_kernel(args.name, args.kernel, x0.shape)
local noisy, blurred, caps = {}, {}, {}
for _, t in ipairs(args.ts) do
  local xt = D.forward(model, x0, t)
  noisy[#noisy + 1] = xt
  blurred[#blurred + 1] = fdm.F.gaussian_blur(xt, args.kernel, args.sigma)
  caps[#caps + 1] = "t = " .. t
end
local ims = {}
for _, x in ipairs(noisy) do ims[#ims + 1] = x end
for _, x in ipairs(blurred) do ims[#ims + 1] = x end
C.save_grid(C.out_file(args, "1_2_blur.png"), ims, { nrow = #noisy, col_captions = caps,
  row_captions = { "noisy", string.format("blur k%d s%g", args.kernel, args.sigma) }, scale = 4,
  title = "classical denoising", upsample = {} })   -- no samples: nothing for stage II
