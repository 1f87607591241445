-- The course's Part 0: several prompts, several step counts, one seed; stage I
-- (64x64) then, with --upsampler, stage II (256x256).
--   fdm scripts/sample.lua --model ~/IF-I-M-v1.0 --upsampler ~/IF-II-M-v1.0 \
--       --prompts "a lithograph of waterfalls,a man wearing a hat" --steps 20,50,100 --seed 101
--   fdm scripts/sample.lua            -- without --model: the shipped MNIST DDPM (digit prompts)
-- Writes OUT/sample.png (rows: step counts; columns: prompts) and, with
-- --upsampler, OUT/sample_upsampled.png; prints timings and peak memory.
local fdm = rawget(_G, "fdm") or require "fdm"
local cli = require "fdm.cli"
local D = require "fdm.diffusion"

local COURSE_PROMPTS = "an oil painting of a snowy mountain village,a man wearing a hat,a rocket ship"
local spec = {
  name = "sample", script = "scripts/sample.lua", common = false,
  summary = "Part 0: sample prompts at several step counts with one seed (DeepFloyd IF stage I, then stage II)",
  options = {
    { "model", "string", nil, "DeepFloyd IF stage I: its folder (diffusers layout) or a model id already in the Hugging Face cache (DeepFloyd/IF-I-M-v1.0); default: the shipped MNIST DDPM" },
    { "upsampler", "string", nil, "DeepFloyd IF stage II (a folder or a cached model id): upsample every sample to 256x256" },
    { "prompt", "string", nil, "one prompt (same as --prompts with one entry)" },
    { "prompts", "string", nil, "comma-separated prompts (default: the course's three; digits for the MNIST model)" },
    { "steps", "ints", { 20, 50, 100 }, "stage I step counts, one grid row each", min = 2 },
    { "timesteps", "choice", "auto", "pipeline: IFPipeline's (diffusers' set_timesteps: steps model calls, the last to " ..
      "the clean image); course: Part A's strided ~990, ..., 0 (steps - 1 model calls); auto: pipeline for DeepFloyd IF, " ..
      "course for the MNIST DDPM", choices = { "auto", "pipeline", "course" } },
    { "seed", "int", 180, "random seed, reused for every step count" },
    { "cfg", "number", 7, "stage I guidance scale" },
    { "n", "int", 1, "samples per prompt", min = 1 },
    { "upsampler-steps", "int", 50, "stage II steps", min = 2 },
    { "upsampler-cfg", "number", 4, "stage II guidance scale" },
    { "noise-level", "int", 250, "stage II noise level of the upscaled image", min = 0 },
    { "variant", "string", nil, "weights variant to prefer (fp16)" },
    { "device", "choice", "auto", "where the models run (the T5 encoder too; images come back to the CPU to be saved; auto: the GPU when there is one, FDM_DEVICE sets the default)",
      choices = cli.device_choices() },
    cli.PRECISION,
    { "out", "string", "out/sample", "output folder" },
    { "graph", "flag", false, "CUDA graphs: capture one sampling step (of each stage) and replay it (--device cuda; " ..
      "the same numbers as without)" },
  },
}
local args = cli.parse_or_exit(arg, spec)
if args.timesteps == "auto" then args.timesteps = args.model and "pipeline" or "course" end
if args.timesteps == "pipeline" and not args.model then
  cli.usage_error("--timesteps pipeline: IFPipeline's timesteps need a DeepFloyd IF model (--model); the MNIST DDPM takes course")
end
if args.graph and not fdm.graph_supported({ device = args.device }) then
  cli.usage_error("--graph: CUDA graphs need --device cuda; device '" .. args.device .. "' has none")
end

local function split(s)
  local out = {}
  for p in (s .. ","):gmatch("([^,]*),") do
    p = p:gsub("^%s+", ""):gsub("%s+$", "")
    if p ~= "" then out[#out + 1] = p end
  end
  return out
end

local L = require "fdm.deepfloyd.loader"
local IF = require "fdm.deepfloyd"
local t_start = fdm.time()
local model, m2
local ok, err = pcall(function()
  if args.model then
    model = IF.load(args.model, { variant = args.variant, device = args.device, precision = args.precision, stage = 1 })
    if args.upsampler then
      m2 = IF.load(args.upsampler, { variant = args.variant, text_model = model, device = args.device,
        precision = args.precision, stage = 2 })
    end
  else
    if args.upsampler then error("--upsampler needs --model (a DeepFloyd IF stage I folder)", 0) end
    model = require("fdm.ddpm_model").load(nil, { device = args.device, precision = args.precision })
  end
end)
if not ok then
  io.stderr:write("sample: " .. tostring(err) .. "\n")
  os.exit(2)
end
-- step counts and the noise level against the models' T (a usage error, before any work)
for _, steps in ipairs(args.steps) do
  if steps > model.T then cli.usage_error(("--steps %d: the model has %d timesteps"):format(steps, model.T)) end
end
if m2 then
  if args.upsampler_steps > m2.T then
    cli.usage_error(("--upsampler-steps %d: the upsampler has %d timesteps"):format(args.upsampler_steps, m2.T))
  end
  if args.noise_level >= m2.noising.T then
    cli.usage_error(("--noise-level %d: expected 0 to %d"):format(args.noise_level, m2.noising.T - 1))
  end
end
local prompts = split(args.prompts or args.prompt or (args.model and COURSE_PROMPTS or "a 3,seven,the digit nine"))
if #prompts == 0 then io.stderr:write("sample: no prompts\n"); os.exit(2) end

local t0 = fdm.time()
local conds, uncond = {}, nil
ok, err = pcall(function()
  if model.encode_many then   -- IF: the prompts not cached go through T5 as one batch
    local all = model:encode_many({ "", table.unpack(prompts) })
    uncond = all[1]
    for i = 1, #prompts do conds[i] = all[i + 1] end
  else
    uncond = model:encode("")
    for i, p in ipairs(prompts) do conds[i] = model:encode(p) end
  end
end)
if not ok then io.stderr:write("sample: " .. tostring(err) .. "\n"); os.exit(2) end
print(("embedded %d prompts in %.2f s"):format(#prompts + 1, fdm.time() - t0))
if model.free_text_encoder then model:free_text_encoder() end

local function batch_cond(list)
  local l = {}
  for i, c in ipairs(list) do
    local shape = { args.n }
    for k = 2, c:dim() do shape[k] = c.shape[k] end
    l[i] = c:expand(shape)
  end
  return fdm.cat(l, 1)
end
local cond = batch_cond(conds)
local n = #prompts * args.n

-- the timesteps of a run of `steps`: IFPipeline's (ending in -1, the clean image) or the course's
local function timesteps_of(m, steps)
  if args.timesteps == "pipeline" then return m.scheduler:pipeline_timesteps(steps) end
  return D.strided_timesteps { steps = steps, T = m.T }
end

local rows, rows_up, row_caps = {}, {}, {}
for _, steps in ipairs(args.steps) do
  fdm.manual_seed(args.seed)
  local ts = fdm.time()
  local list = timesteps_of(model, steps)
  local x = D.sample(model, n, { cond = cond, uncond = uncond, cfg = args.cfg, timesteps = list, graph = args.graph })
  local dt = fdm.time() - ts
  print(("stage I, %d steps (%d model calls, %s timesteps), %s: %.2f s (%.3f s per call)"):format(steps, #list - 1,
    args.timesteps, args.precision, dt, dt / (#list - 1)))
  rows[#rows + 1] = fdm.clamp((x + 1) * 0.5, 0, 1):to("cpu")
  row_caps[#row_caps + 1] = steps .. " steps"
  if m2 then
    local tu = fdm.time()
    local list2 = timesteps_of(m2, args.upsampler_steps)
    local y = IF.upscale(m2, x, cond, uncond, { timesteps = list2, cfg = args.upsampler_cfg,
      noise_level = args.noise_level, graph = args.graph })
    local du = fdm.time() - tu
    print(("stage II, %d steps (%d model calls), %s: %.2f s (%.3f s per call)"):format(args.upsampler_steps, #list2 - 1,
      args.precision, du, du / (#list2 - 1)))
    rows_up[#rows_up + 1] = fdm.clamp((y + 1) * 0.5, 0, 1):to("cpu")
  end
end

local caps = {}
for _, p in ipairs(prompts) do for _ = 1, args.n do caps[#caps + 1] = p end end
os.execute("mkdir -p '" .. args.out .. "'")
local function grid(path, list, scale)
  fdm.io.save_grid(path, fdm.cat(list, 1), { nrow = n, scale = scale, row_captions = row_caps, col_captions = caps,
    title = ("%s, seed %d, CFG %g"):format(args.model or "MNIST DDPM", args.seed, args.cfg) })
  print("wrote " .. path)
end
local s1 = model.image_shape[2]
grid(args.out .. "/sample.png", rows, math.max(1, 128 // s1))
if m2 then grid(args.out .. "/sample_upsampled.png", rows_up, math.max(1, 256 // m2.image_shape[2])) end
local peak = L.peak_rss()
print(("total %.1f s; peak memory %.2f GB"):format(fdm.time() - t_start, (peak or 0) / 1e9))
