-- Part A 1.1: the forward process x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
-- on the test image (the first MNIST test digit, a 7) at t = 250, 500, 750.
--   ./build/fdm scripts/partA/1_1_forward.lua [--ts 250,500,750] [--seed 180] [--image any.png]
-- Writes out/partA/1_1_forward.png.
local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local D, M = C.D, C.M

local args = C.parse("1_1_forward", "Part A 1.1: the forward (noising) process", {
  "seed", "device", "model", "out",
  { "ts", "ints", { 250, 500, 750 }, "timesteps to show", min = 0, max = 999 },
  { "image", "string", nil, "a PNG or JPEG to use instead of the MNIST test image" },
})
local model = C.load_model(args)
C.seed(args)
local x0 = args.image and M.to_model(C.load_image(args.image)) or C.test_image(1)
local ims, caps = { x0 }, { "original" }
for _, t in ipairs(args.ts) do
  ims[#ims + 1] = D.forward(model, x0, t)
  caps[#caps + 1] = string.format("t = %d (abar %.3f)", t, model.schedule:abar(t))
end
C.save_grid(C.out_file(args, "1_1_forward.png"), ims, { nrow = #ims, captions = caps, scale = 4,
  title = "forward process", upsample = {} })   -- no samples: nothing for stage II
