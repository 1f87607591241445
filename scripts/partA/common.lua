-- scripts/partA/common.lua: what the Part A scripts share (options, model
-- loading, test and user images, the stroke renderer, grids). Loaded with
--   local C = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local D = require "fdm.diffusion"
local M = require "fdm.ddpm_model"
local F = fdm.F

local C = { D = D, M = M, size = 28, channels = 1 }

---------------------------------------------------------------- options
-- the options Part A scripts share; each script names those it reads
C.OPTIONS = {
  { "seed", "int", 180, "random seed (printed; the same seed gives the same noise)" },
  { "prompt", "string", "", "text prompt (see docs/partA.md: \"7\", \"seven\", \"the digit seven\", \"\" = unconditional)" },
  { "steps", "int", 34, "strided timesteps from ~990 to 0 (34 = the course's 990, 960, ..., 0)", min = 2, max = 1000 },
  { "cfg", "number", 7, "classifier-free guidance scale gamma (1 = none)" },
  { "device", "choice", "auto", "where the model runs (auto: the GPU when there is one; FDM_DEVICE sets the default)",
    choices = cli.device_choices() },
  { "model", "string", M.DEFAULT_WEIGHTS, "model weights (scripts/train_ddpm.lua writes them), or DeepFloyd IF stage I: its folder or a model id already in the Hugging Face cache (docs/deepfloyd.md)" },
  { "out", "string", "out/partA", "output folder" },
  { "threshold", "flag", false, "dynamic thresholding of x0_hat (IF's: 99.5th percentile of |x0|)" },
  -- the hybrids' low-pass (1_9_hybrids, eval_quality); C.hybrid_filter resolves them
  { "filter", "choice", "auto", "hybrid low-pass: auto (by image size: dct below 64 px, gaussian k33 s2 from 64), gaussian or dct",
    choices = { "auto", "gaussian", "dct" } },
  { "keep", "int", nil, "hybrid DCT low-pass: frequencies kept per axis (default 6 per 28 pixels)", min = 1 },
  { "kernel", "int", nil, "hybrid Gaussian low-pass: kernel size (default 33)", min = 1 },
  { "sigma", "number", nil, "hybrid Gaussian low-pass: sigma (default 2)", min = 1e-3 },
}
local SHARED = {}
for _, o in ipairs(C.OPTIONS) do SHARED[o[1]] = o end

-- The course's i_start indices (into 990, 960, ..., 0): the last that still
-- denoises is 32 (t = 30); 33 is t = 0.
C.I_START_MAX = 32

-- Parses the command line. `own` lists the names of the shared options the
-- script reads (strings, in C.OPTIONS) and its own option entries (tables,
-- fdm.cli's format); `defaults` changes defaults (e.g. {cfg = 1, prompt = "seven"}).
function C.parse(name, summary, own, defaults, script)
  local options = {}
  for _, o in ipairs(own or {}) do
    if type(o) == "string" then
      options[#options + 1] = assert(SHARED[o], "partA: no shared option --" .. o)
    else
      options[#options + 1] = o
    end
  end
  for _, o in ipairs(options) do
    if o == SHARED.device then -- a script that runs the model somewhere also says in which precision
      options[#options + 1] = cli.PRECISION
      break
    end
  end
  for _, o in ipairs(options) do
    if o == SHARED.model then -- DeepFloyd IF (an IF folder as --model): the stage II upsampler too
      options[#options + 1] = { "upsampler", "string", nil, "with a DeepFloyd IF folder as --model: its stage II folder; " ..
        "every grid is also written upsampled to 256x256 (FILE_256.png)" }
      break
    end
  end
  local spec = { name = name, summary = summary, common = false, options = options, defaults = defaults,
    script = script or ("scripts/partA/" .. name .. ".lua") }
  local args = cli.parse_or_exit(arg, spec)
  args.name = name
  return args
end

-- comma-separated list -> Lua list (empty items kept as "")
function C.split(s, sep)
  sep = sep or ","
  local out = {}
  if s == nil then return out end
  for part in (s .. sep):gmatch("(.-)" .. sep:gsub("%p", "%%%0")) do
    out[#out + 1] = (part:gsub("^%s+", ""):gsub("%s+$", ""))
  end
  return out
end

---------------------------------------------------------------- setup
-- the DDPM of --model (missing or unfit weights are usage errors)
function C.load_model(args)
  local IF = require "fdm.deepfloyd"
  if IF.is_folder(args.model) then
    -- DeepFloyd IF stage I (64x64 RGB, T5 prompts); --upsampler: stage II
    local ok, m = pcall(IF.load, args.model, { device = args.device, precision = args.precision, stage = 1 })
    if not ok then cli.usage_error(args.name .. ": --model: " .. tostring(m)) end
    C.IF, C.size, C.channels = m, m.image_shape[2], m.image_shape[1]
    if args.upsampler then
      local ok2, m2 = pcall(IF.load, args.upsampler, { text_model = m, device = args.device, precision = args.precision,
        stage = 2 })
      if not ok2 then cli.usage_error(args.name .. ": --upsampler: " .. tostring(m2)) end
      C.upsampler = m2
    end
    return m
  end
  if args.upsampler then cli.usage_error(args.name .. ": --upsampler needs a DeepFloyd IF folder as --model") end
  return M.load(args.model, { device = args.device, precision = args.precision, what = args.name .. ": --model" })
end

-- a condition [1, ...] repeated for n images
function C.expand_cond(c, n)
  local shape = { n }
  for k = 2, c:dim() do shape[k] = c.shape[k] end
  return c:expand(shape)
end

-- model:encode, an unknown prompt being a usage error
function C.encode(model, prompt, args)
  if C.IF and model == C.IF then
    local ok, e = pcall(model.encode, model, prompt)
    if not ok then cli.usage_error((args and args.name or "partA") .. ": " .. tostring(e)) end
    if prompt ~= "" and not C.first_cond then C.first_cond = e end
    return e
  end
  local c, err = M.parse_prompt(prompt)
  if c == nil then cli.usage_error((args and args.name or "partA") .. ": " .. err) end
  return model:encode(prompt)
end

-- the embeddings of several prompts, in order: IF runs the ones it has not
-- cached through T5 as one batch (model:encode_many), which reads T5's
-- weights once for all of them
-- (with_uncond: "" too, returned first)
function C.encode_all(model, prompts, args, with_uncond)
  if with_uncond then
    local l = { "" }
    for _, p in ipairs(prompts) do l[#l + 1] = p end
    prompts = l
  end
  if not (C.IF and model == C.IF) then
    local out = {}
    for i, p in ipairs(prompts) do out[i] = C.encode(model, p, args) end
    return out
  end
  local ok, es = pcall(model.encode_many, model, prompts)
  if not ok then cli.usage_error((args and args.name or "partA") .. ": " .. tostring(es)) end
  for i, p in ipairs(prompts) do
    if p ~= "" and not C.first_cond then C.first_cond = es[i] end
  end
  return es
end

-- The --prompt of the image-to-image scripts (SDEdit, sketches, inpainting):
-- "auto" conditions each image on what it shows, as the course conditions
-- these edits on a prompt. On the MNIST DDPM that is the image's own digit:
-- an MNIST image's label, a sketch's digit, and for the user's own image the
-- shipped classifier's reading of it; on DeepFloyd IF, the course's prompt.
C.AUTO_PROMPT = "auto"
C.IF_IMAGE_PROMPT = "a high quality photo"
C.IMAGE_PROMPT_OPTION = { "prompt", "string", C.AUTO_PROMPT,
  "the prompt each image is conditioned on; auto = the image's own digit (its MNIST label, the sketch's digit, " ..
  "the classifier's reading of your image; on DeepFloyd IF: '" .. C.IF_IMAGE_PROMPT .. "'); \"\" = unconditional" }
local DIGIT_NAMES = { [0] = "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine" }

local reader -- the classifier that reads user images (loaded on first use)
-- the digit the shipped classifier reads in a [1,1,28,28] model-space image
function C.read_digit(x)
  local cls = require "fdm.classifier"
  if not reader then
    local ok, net = pcall(cls.load, nil, { what = "the digit reader" })
    if not ok then cli.usage_error("cannot read the digit of your image for --prompt auto (" ..
      tostring(net):gsub("\n.*", "") .. "); give --prompt") end
    reader = net
  end
  local x01 = M.from_model(x:to("cpu"))
  if x01.shape[3] ~= 28 then x01 = F.interpolate(x01, { size = { 28, 28 }, mode = "bilinear", align_corners = false }) end
  return cls.predict(reader, x01:narrow(2, 1, 1):contiguous())[1]:item()
end

-- The prompt for one image and its row caption. digit: the digit the image
-- is known to show (nil: the user's own image, read by the classifier).
function C.image_prompt(args, x, name, digit)
  local p = args.prompt
  if p ~= C.AUTO_PROMPT then return p, name end
  if C.IF then return C.IF_IMAGE_PROMPT, name end
  local how = "prompt"
  if digit == nil then digit, how = C.read_digit(x), "read as" end
  return "the digit " .. DIGIT_NAMES[digit], ("%s (%s %d)"):format(name, how, digit)
end

-- the title's words for the prompt of the image-to-image scripts
function C.prompt_title(args)
  if args.prompt ~= C.AUTO_PROMPT then return C.caption(args.prompt) end
  if C.IF then return ('"%s"'):format(C.IF_IMAGE_PROMPT) end
  return "each conditioned on its digit"
end

-- two comma-separated prompts of --prompts, else a usage error
function C.two_prompts(args)
  local p = C.split(args.prompts)
  if #p ~= 2 then
    cli.usage_error(("%s: --prompts expects two comma-separated prompts (e.g. \"6,9\"), got '%s'")
      :format(args.name, args.prompts))
  end
  return p
end

function C.seed(args)
  fdm.manual_seed(args.seed)
  print(string.format("seed %d", args.seed))
end

-- a Gaussian kernel size the blur takes on images of image_shape ([C, H, W]):
-- odd, and at most 2 * side - 1 (the blur pads by reflection)
function C.check_gaussian_kernel(name, kernel, image_shape)
  if kernel % 2 == 0 then cli.usage_error(("%s: --kernel %d: a Gaussian kernel size must be odd"):format(name, kernel)) end
  local h, w = image_shape[#image_shape - 1], image_shape[#image_shape]
  local side = math.min(h, w)
  if kernel // 2 >= side then
    cli.usage_error(("%s: --kernel %d is too large for %dx%d images (reflect padding: at most %d)"):format(name,
      kernel, h, w, 2 * side - 1))
  end
end

-- The hybrids' low-pass filter from --filter, --keep, --kernel, --sigma:
-- "auto" takes the filter the given options imply (--keep: DCT, --kernel or
-- --sigma: Gaussian), else the calibrated one for the model's image size
-- (D.hybrid_filter). An option of the other filter is a usage error.
function C.hybrid_filter(args, model)
  local kind = args.filter
  local gauss = args.kernel ~= nil or args.sigma ~= nil
  if kind == "auto" then
    if args.keep and gauss then cli.usage_error(args.name .. ": --keep (DCT low-pass) and --kernel/--sigma (Gaussian) exclude each other") end
    kind = args.keep and "dct" or gauss and "gaussian" or D.hybrid_filter(model.image_shape).kind
  end
  if kind == "dct" then
    if gauss then cli.usage_error(args.name .. ": --kernel and --sigma set a Gaussian low-pass; --filter dct takes --keep") end
    local keep = args.keep or D.dct_keep_for(model.image_shape)
    local h, w = model.image_shape[2], model.image_shape[3]
    if keep > math.min(h, w) then
      cli.usage_error(("%s: --keep %d is more frequencies than a %dx%d image has"):format(args.name, keep, h, w))
    end
    return { kind = "dct", keep = keep }
  end
  if args.keep then cli.usage_error(args.name .. ": --keep sets a DCT low-pass; --filter gaussian takes --kernel and --sigma") end
  local f = D.check_filter { kind = "gaussian", kernel = args.kernel, sigma = args.sigma }
  C.check_gaussian_kernel(args.name, f.kernel, model.image_shape)
  return f
end

-- The hybrids' band isolation: "auto" is the calibrated one for the image
-- size (D.hybrid_isolate: "own" under 64 pixels, none from 64 up, as the
-- course); nil for none.
C.ISOLATE_CHOICES = { "auto", "none", "far", "both", "own" }
function C.hybrid_isolate(choice, model)
  if choice == "auto" then return D.hybrid_isolate(model.image_shape) end
  return choice ~= "none" and choice or nil
end

function C.timesteps(args) return D.strided_timesteps { steps = args.steps } end

-- the index of the current timestep list nearest to the course's i_start
-- (an index of 990, 960, ..., 0); equal to it with the default --steps 34
function C.index_for_course(ts, i_course)
  local i = D.index_for_t(ts, 990 - 30 * i_course)
  return math.min(i, #ts - 2)
end

-- sampler options common to the scripts
function C.sampler_opts(args, extra)
  local o = { threshold = args.threshold or nil }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

function C.mkdir(p) os.execute("mkdir -p '" .. p .. "'") end

function C.out_file(args, file)
  C.mkdir(args.out)
  return args.out .. "/" .. file
end

---------------------------------------------------------------- images
local data_cache = {}
-- MNIST test images [N,1,28,28] in [0,1] and labels (fdm.data, else the classifier's loader)
function C.mnist_test()
  if data_cache.test then return data_cache.test end
  local ds
  local ok, data = pcall(require, "fdm.data")
  if ok and type(data) == "table" and data.load then
    local ok2, d = pcall(data.load, "mnist", "test")
    if ok2 then ds = d end
  end
  if not ds then ds = require("fdm.classifier").mnist("test") end
  data_cache.test = ds
  return ds
end

-- MNIST test image k (1-based; 1 = the course's "test image" role: a 7) in model space [-1,1]
function C.test_image(k)
  local ds = C.mnist_test()
  local x = ds.images:narrow(1, k or 1, 1):clone()
  if C.size ~= 28 or C.channels ~= 1 then
    x = F.interpolate(x, { size = { C.size, C.size }, mode = "bilinear", align_corners = false })
    x = x:expand(1, C.channels, C.size, C.size):contiguous()
  end
  return M.to_model(x), ds.labels[k or 1]:item()
end

-- any PNG or JPEG (gray/RGB/RGBA, any size, either polarity) -> [1,1,28,28] in [0,1]:
-- gray (alpha composited over white), box-filtered and bilinearly resized so
-- the shorter side is `size`, center-cropped, inverted when the border is light
function C.prepare_image(im, size)
  size = size or C.size
  local c = im.shape[1]
  if C.channels == 3 then return C.prepare_rgb(im, size), false end
  local g
  if c == 1 then g = im
  elseif c == 2 then g = im:narrow(1, 1, 1) * im:narrow(1, 2, 1) + (1 - im:narrow(1, 2, 1))
  else
    g = im:narrow(1, 1, 1) * 0.299 + im:narrow(1, 2, 1) * 0.587 + im:narrow(1, 3, 1) * 0.114
    if c == 4 then local a = im:narrow(1, 4, 1); g = g * a + (1 - a) end
  end
  local H, W = g.shape[2], g.shape[3]
  local x = g:reshape(1, 1, H, W)
  local k = math.min(H, W) // size
  if k >= 2 then
    x = F.avg_pool2d(x, k)
    H, W = x.shape[3], x.shape[4]
  end
  local s = size / math.min(H, W)
  local nh, nw = math.max(size, math.floor(H * s + 0.5)), math.max(size, math.floor(W * s + 0.5))
  if nh ~= H or nw ~= W then x = F.interpolate(x, { size = { nh, nw }, mode = "bilinear", align_corners = false }) end
  x = x:narrow(3, (nh - size) // 2 + 1, size):narrow(4, (nw - size) // 2 + 1, size):contiguous()
  -- border mean: light background -> dark-on-light image -> invert to MNIST's light-on-dark
  local b = fdm.cat({ x:narrow(3, 1, 1):reshape(size), x:narrow(3, size, 1):reshape(size),
    x:narrow(4, 1, 1):reshape(size), x:narrow(4, size, 1):reshape(size) }, 1):mean():item()
  if b > 0.5 then x = 1 - x end
  return fdm.clamp(x, 0, 1), b > 0.5
end

-- a colour image -> [1,3,size,size] in [0,1]: alpha over white, box filter,
-- bilinear resize of the shorter side to size, centre crop (DeepFloyd IF)
function C.prepare_rgb(im, size)
  local c = im.shape[1]
  local rgb
  if c == 1 or c == 2 then
    local g = im:narrow(1, 1, 1)
    if c == 2 then g = g * im:narrow(1, 2, 1) + (1 - im:narrow(1, 2, 1)) end
    rgb = g:expand(3, g.shape[2], g.shape[3])
  else
    rgb = im:narrow(1, 1, 3)
    if c == 4 then local a = im:narrow(1, 4, 1); rgb = rgb * a + (1 - a) end
  end
  local H, W = rgb.shape[2], rgb.shape[3]
  local x = rgb:contiguous():reshape(1, 3, H, W)
  local k = math.min(H, W) // size
  if k >= 2 then x = F.avg_pool2d(x, k); H, W = x.shape[3], x.shape[4] end
  local s = size / math.min(H, W)
  local nh, nw = math.max(size, math.floor(H * s + 0.5)), math.max(size, math.floor(W * s + 0.5))
  if nh ~= H or nw ~= W then x = F.interpolate(x, { size = { nh, nw }, mode = "bilinear", align_corners = false }) end
  x = x:narrow(3, (nh - size) // 2 + 1, size):narrow(4, (nw - size) // 2 + 1, size):contiguous()
  return fdm.clamp(x, 0, 1)
end

function C.load_image(path, size)
  local ok, im = pcall(fdm.io.read_image, path, { range = "01" })
  if not ok then
    cli.usage_error("cannot read image '" .. path .. "' (a PNG or JPEG file expected): " .. (tostring(im):gsub("\n.*", "")))
  end
  return C.prepare_image(im, size)
end

-- a mask image (PNG or JPEG) -> [1,1,28,28] with 1 where new content goes (light pixels),
-- resized like an image (without the polarity rule) and thresholded at 0.5
function C.load_mask(path, size)
  size = size or C.size
  local ok, im = pcall(fdm.io.read_image, path, { range = "01" })
  if not ok then
    cli.usage_error("cannot read mask '" .. path .. "' (a PNG or JPEG file expected): " .. (tostring(im):gsub("\n.*", "")))
  end
  local g = im:narrow(1, 1, 1)
  local H, W = g.shape[2], g.shape[3]
  local x = g:reshape(1, 1, H, W)
  local s = size / math.min(H, W)
  local nh, nw = math.max(size, math.floor(H * s + 0.5)), math.max(size, math.floor(W * s + 0.5))
  x = F.interpolate(x, { size = { nh, nw }, mode = "bilinear", align_corners = false })
  x = x:narrow(3, (nh - size) // 2 + 1, size):narrow(4, (nw - size) // 2 + 1, size)
  return fdm.gt(x, 0.5):float():expand(1, C.channels, size, size):contiguous()
end

-- a size x size mask with 1 in the rectangle rows r0..r1, cols c0..c1 (1-based, inclusive)
function C.rect_mask(r0, r1, c0, c1, size)
  if size == nil and C.size ~= 28 then -- coordinates of a 28x28 canvas, scaled to the model's size
    local f = C.size / 28
    r0, c0 = math.floor((r0 - 1) * f) + 1, math.floor((c0 - 1) * f) + 1
    r1, c1 = math.floor(r1 * f + 0.5), math.floor(c1 * f + 0.5)
  end
  size = size or C.size
  local m = fdm.zeros(1, C.channels, size, size)
  m:narrow(3, r0, r1 - r0 + 1):narrow(4, c0, c1 - c0 + 1):fill_(1)
  return m
end

---------------------------------------------------------------- strokes
-- Renders polylines into a size x size image in [0,1] (white strokes on black).
-- strokes: list of polylines, each a list of {x, y} points in pixel units of
-- a 28x28 canvas (x to the right, y down); width in pixels (anti-aliased edge).
function C.render_strokes(strokes, opts)
  opts = opts or {}
  local size, width = opts.size or C.size, opts.width or 2.6
  local r = width / 2
  local segs = {}
  for _, line in ipairs(strokes) do
    if #line == 1 then segs[#segs + 1] = { line[1], line[1] } end
    for i = 1, #line - 1 do segs[#segs + 1] = { line[i], line[i + 1] } end
  end
  local vals = {}
  local sc = size / 28
  for py = 0, size - 1 do
    local row = {}
    for px = 0, size - 1 do
      local x, y = (px + 0.5) / sc, (py + 0.5) / sc
      local best = math.huge
      for _, s in ipairs(segs) do
        local ax, ay, bx, by = s[1][1], s[1][2], s[2][1], s[2][2]
        local dx, dy = bx - ax, by - ay
        local L = dx * dx + dy * dy
        local u = L > 0 and math.max(0, math.min(1, ((x - ax) * dx + (y - ay) * dy) / L)) or 0
        local ex, ey = x - (ax + u * dx), y - (ay + u * dy)
        local d = math.sqrt(ex * ex + ey * ey)
        if d < best then best = d end
      end
      row[px + 1] = math.max(0, math.min(1, r + 0.5 - best))
    end
    vals[py + 1] = row
  end
  local t = fdm.tensor({ { vals } })
  if C.channels ~= 1 and opts.size == nil then t = t:expand(1, C.channels, size, size):contiguous() end
  return t
end

-- "x,y x,y ...; x,y ..." (pixels of a 28x28 canvas) -> strokes
-- "x,y x,y ...;x,y ..." -> polylines; nil and the reason for anything else
-- (a stray word would otherwise drop a point without a word)
function C.parse_strokes(s)
  local strokes = {}
  for part in (s .. ";"):gmatch("(.-);") do
    local line = {}
    for word in part:gmatch("%S+") do
      local x, y = word:match("^([^,]+),([^,]+)$")
      x, y = tonumber(x), tonumber(y)
      if not x or not y then return nil, ("'%s' is not a point x,y"):format(word) end
      line[#line + 1] = { x, y }
    end
    if #line == 1 then return nil, ("a polyline needs two points or more, got '%s'"):format(part) end
    if #line > 0 then strokes[#strokes + 1] = line end
  end
  if #strokes == 0 then return nil, "no polyline" end
  return strokes
end

local function ellipse(cx, cy, rx, ry, n)
  local pts = {}
  for i = 0, n do
    local a = 2 * math.pi * i / n
    pts[#pts + 1] = { cx + rx * math.sin(a), cy - ry * math.cos(a) }
  end
  return pts
end

-- hand-drawn sketches (each a list of polylines)
C.SKETCHES = {
  { name = "sketch: seven", digit = 7, strokes = { { { 7, 6 }, { 20, 6 }, { 16, 13 }, { 12, 23 } } } },
  { name = "sketch: zero", digit = 0, strokes = { ellipse(14, 14, 6, 9, 24) } },
  { name = "sketch: four", digit = 4, strokes = { { { 15, 5 }, { 7, 17 }, { 21, 17 } }, { { 17, 9 }, { 17, 24 } } } },
}

-- a synthetic "web image": a dark "2" on a light 96x72 RGB background with a
-- tint and a frame, written as a PNG (what --image would load)
function C.make_web_image(path)
  local big = C.render_strokes({ { { 8, 10 }, { 11, 6.5 }, { 16, 6 }, { 19.5, 9 }, { 18, 14 }, { 8, 22 }, { 21, 22 } } },
    { size = 72, width = 3.2 })
  local ink = big:reshape(1, 72, 72)
  local canvas = fdm.ones(3, 72, 96)
  local inner = canvas:narrow(3, 13, 72)
  local tint = fdm.tensor({ 0.95, 0.92, 0.85 }):reshape(3, 1, 1)
  local img = fdm.ones(3, 72, 72) * tint * (1 - ink) + ink * 0.1
  inner:copy_(img)
  fdm.io.write_png(path, canvas)
  return path
end

---------------------------------------------------------------- output
local function to01(list)
  local out = {}
  for i, x in ipairs(list) do
    if x.device ~= "cpu" then x = x:to("cpu") end
    out[i] = M.from_model(x:detach())
  end
  return fdm.no_grad(function() return fdm.cat(out, 1) end)
end
C.to01 = to01

-- images: a list of [k,1,H,W] tensors in model space [-1,1]
function C.save_grid(path, images, opts)
  opts = opts or {}
  local o = { scale = opts.scale or 3 }
  for k, v in pairs(opts) do o[k] = v end
  if C.IF and not opts.scale then o.scale = 2 end
  fdm.io.save_grid(path, to01(images), o)
  print("wrote " .. path)
  if C.upsampler then C.save_upsampled(path, images, o) end
end

-- DeepFloyd IF: a grid at stage II's size, written as FILE_256.png. What
-- each entry of images is says opts.upsample (a list parallel to images):
--   false      an input or helper (original, mask, noisy x_t, a band):
--              resized bilinearly, not diffused
--   true       a sample: through stage II, conditioned on the script's first prompt
--   a tensor   a sample, conditioned on that embedding ([1, 77, D], or one per image)
--   {of = j, apply = f}   f of entry j's stage II result (an anagram's view)
-- Without opts.upsample every entry is a sample (true). A grid without
-- samples gets no FILE_256.png.
local function upsample_spec(o, n)
  local spec = {}
  for i = 1, n do
    local u = o.upsample == nil and true or o.upsample[i]
    if u == true then u = o.upsample_cond or C.first_cond or true end
    spec[i] = u or false
  end
  return spec
end

function C.save_upsampled(path, images, o)
  local IF = require "fdm.deepfloyd"
  local m1, m2 = C.IF, C.upsampler
  local p2 = path:gsub("%.png$", "") .. "_256.png"
  local spec = upsample_spec(o, #images)
  local uncond = m1:encode("")
  local S2 = m2.image_shape[2]
  -- the samples, one image per row, with their embeddings
  local xs, cs, rows = {}, {}, {}
  for i, x in ipairs(images) do
    local u = spec[i]
    if u and not (type(u) == "table" and u.of) then
      if x.shape[2] ~= 3 then x = x:expand(x.shape[1], 3, x.shape[3], x.shape[4]) end
      local k = x.shape[1]
      local c = u == true and uncond or u   -- a tensor: [1, 77, D] or [k, 77, D]
      if c.shape[1] ~= k then c = c:expand(k, c.shape[2], c.shape[3]) end
      rows[i] = { first = #xs + 1, count = k }
      for r = 1, k do xs[#xs + 1] = m2:on_device(x:narrow(1, r, 1):contiguous()); cs[#cs + 1] = m2:on_device(c:narrow(1, r, 1)) end
    end
  end
  if #xs == 0 then
    print(("%s: not written (this grid holds no samples to upsample)"):format(p2))
    return
  end
  local x, c = fdm.cat(xs, 1), fdm.cat(cs, 1)
  local up = {}
  for s = 1, x.shape[1], 4 do -- a few images per stage II run
    local k = math.min(4, x.shape[1] - s + 1)
    up[#up + 1] = IF.upscale(m2, x:narrow(1, s, k), c:narrow(1, s, k), uncond, { steps = C.upsampler_steps or 50 })
  end
  up = fdm.cat(up, 1)
  local out = {}
  for i, im in ipairs(images) do
    local u = spec[i]
    if rows[i] then
      out[i] = up:narrow(1, rows[i].first, rows[i].count)
    elseif type(u) == "table" and u.of then
      local j = u.of
      if not rows[j] then error(("save_upsampled: entry %d derives from entry %d, which is not a sample"):format(i, j), 0) end
      out[i] = u.apply(up:narrow(1, rows[j].first, rows[j].count))
    else
      local y = im.shape[2] ~= 3 and im:expand(im.shape[1], 3, im.shape[3], im.shape[4]) or im
      out[i] = fdm.F.interpolate(m2:on_device(y:contiguous()), { size = { S2, S2 }, mode = "bilinear", align_corners = false })
    end
  end
  local o2 = {}
  for k, v in pairs(o) do o2[k] = v end
  o2.scale = 1
  fdm.io.save_grid(p2, to01(out), o2)
  print("wrote " .. p2)
end

-- images already in [0,1]
function C.save_grid01(path, images, opts)
  local o = { scale = 3 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local list = {}
  for i, x in ipairs(images) do list[i] = x.device == "cpu" and x or x:to("cpu") end
  fdm.io.save_grid(path, fdm.cat(list, 1), o)
  print("wrote " .. path)
end

function C.write_gif(path, frames, opts)
  local o = { delay_ms = 120, scale = 4 }
  for k, v in pairs(opts or {}) do o[k] = v end
  fdm.io.write_gif(path, to01(frames), o)
  print("wrote " .. path)
end

-- SDEdit of x (model space) at each course i_start (mapped onto the current
-- timesteps): returns the row's images (the original last), their captions
-- and what C.save_grid's upsample takes for them (the edits are samples of
-- cond, the original is an input)
function C.sdedit_row(model, x, i_starts, args, cond, uncond)
  local ts = C.timesteps(args)
  local ims, caps, ups = {}, {}, {}
  for _, ic in ipairs(i_starts) do
    local i = C.index_for_course(ts, ic)
    ims[#ims + 1] = D.sdedit(model, x, i, C.sampler_opts(args, { timesteps = ts, cond = cond,
      uncond = uncond, cfg = args.cfg }))
    caps[#caps + 1] = string.format("i_start %d", i)
    ups[#ups + 1] = cond
  end
  ims[#ims + 1], caps[#caps + 1], ups[#ups + 1] = x, "original", false
  return ims, caps, ups
end

-- one SDEdit row per entry of rows ({x = image, cond = embedding, name = row caption}), saved as one grid
-- (OUT/file, with its stage II version when --upsampler is given)
function C.save_sdedit_grid(model, rows, args, uncond, file, title)
  local ims, cols, names, ups = {}, nil, {}, {}
  for i, r in ipairs(rows) do
    local row, caps, up = C.sdedit_row(model, r.x, args.i_starts, args, r.cond, uncond)
    for j, im in ipairs(row) do
      local k = #ims + 1
      ims[k], ups[k] = im, up[j]
    end
    cols, names[i] = caps, r.name
  end
  C.save_grid(C.out_file(args, file), ims, { nrow = #cols, col_captions = cols, row_captions = names, upsample = ups,
    scale = 3, title = title })
end

-- The main demo's illusion (scripts/anagram.lua): a pair that real digits
-- do not already satisfy under the view (the share of real 2s that read as
-- a 7 when flipped is 1 %; a 6 turned by rot180 reads as a 9 95 % of the time)
C.ANAGRAM_DEFAULT = { prompts = "2,7", view = "flip" }

-- a visual anagram: n samples whose view_k shows prompt_k; returns x and,
-- per entry, the image as that view shows it
function C.anagram(model, prompts, views, args, n)
  local entries, embs = {}, C.encode_all(model, prompts, args, true)
  local uncond = table.remove(embs, 1)
  for k in ipairs(prompts) do entries[k] = { cond = embs[k], view = D.view_by_name(views[k]) } end
  local est = D.anagram(model, entries, uncond, args.cfg)
  local x = D.sample(model, n, C.sampler_opts(args, { estimator = est, steps = args.steps }))
  local shown = {}
  for k, e in ipairs(entries) do shown[k] = e.view.apply(x) end
  return x, shown, entries
end

function C.caption(prompt)
  if C.IF then return prompt == "" and "(unconditional)" or prompt end
  return M.describe_prompt(prompt)
end

function C.timer()
  local t0 = fdm.time()
  return function() return fdm.time() - t0 end
end

return C
