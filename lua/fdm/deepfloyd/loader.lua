-- fdm.deepfloyd.loader: reading the published Hugging Face folders (diffusers /
-- transformers layout) without hard-coding sizes.
--
--   local L = require "fdm.deepfloyd.loader"
--   L.json_decode(s), L.read_json(path)
--   L.weights(dir, {base = "diffusion_pytorch_model", variant = "fp16"|nil})
--       -> name -> tensor (memory-mapped), the list of files read
--       looks for BASE[.VARIANT].safetensors or the shards named by
--       BASE[.VARIANT].safetensors.index.json (fp32, fp16 or bf16 tensors)
--   L.check(params, spec, what)   spec = {{name, shape}, ...}: raises an error
--       that lists missing names, wrong shapes and (up to a few) unexpected names
--   L.spec_bytes(spec, bytes_per_el) ; L.mem_available() (bytes, from /proc/meminfo)
--   L.check_memory(bytes, what)   refuses clearly when bytes exceed available memory
--   L.load_safetensors(path, opts)  fdm.io's, its errors about the file only
--   L.hub_id(name) -> {org, repo, revision} for "ORG/NAME[@REVISION]" that is not a path on disk
--   L.hub_cache() ; L.hub_snapshot(id) -> the snapshot folder a download left, or nil, the repo's cache folder, why
local fdm = require "fdm"
local json = require "fdm.json"

local L = {}

---------------------------------------------------------------- JSON
-- the folders' JSON goes through fdm.json (strict, no code); index files of
-- sharded models list every tensor, so the size limit is generous, and
-- tokenizer configs hold integers beyond int64 (model_max_length = 1e30)
local JSON_OPTS = { max_bytes = 256 << 20, big_integers = "float" }
function L.json_decode(s) return json.decode(s, JSON_OPTS) end
L.null = json.null
function L.is_null(v) return v == nil or v == L.null end

-- a config's numbers that fdm computes shapes and loops with, named (where: "unet config", ...) when
-- they are not what diffusers or transformers would build
local function show(v) return type(v) == "string" and ("'" .. v .. "'") or tostring(v) end
function L.config_int(v, where, what, lo, hi)
  if math.type(v) ~= "integer" or v < lo or (hi and v > hi) then
    error(("%s: %s must be an integer %s, got %s"):format(where, what,
      hi and ("in %d..%d"):format(lo, hi) or (">= " .. lo), show(v)), 0)
  end
  return v
end
function L.config_ints(list, where, what, lo)
  for i, v in ipairs(list) do L.config_int(v, where, ("%s[%d]"):format(what, i), lo) end
  return list
end
-- a finite number in [lo, hi] (nil bounds: none)
function L.config_number(v, where, what, lo, hi)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge or (lo and v < lo) or (hi and v > hi) then
    local range = lo and hi and (" in [%g, %g]"):format(lo, hi) or ""
    error(("%s: %s must be a finite number%s, got %s"):format(where, what, range, show(v)), 0)
  end
  return v
end
function L.config_positive(v, where, what)
  if type(v) ~= "number" or not (v > 0) or v == math.huge then
    error(("%s: %s must be a positive number, got %s"):format(where, what, show(v)), 0)
  end
  return v
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close(); return true end
  return false
end
L.exists = exists

function L.read_file(path)
  local f, e = io.open(path, "rb")
  if not f then return nil, e end
  local s = f:read("a")
  f:close()
  return s
end

function L.read_json(path, what)
  local s = L.read_file(path)
  if not s then error(("%s: missing file '%s'"):format(what or "deepfloyd", path), 0) end
  local ok, v = pcall(L.json_decode, s)
  if not ok then error(("%s: '%s' is not valid JSON (%s)"):format(what or "deepfloyd", path, v), 0) end
  return v
end

---------------------------------------------------------------- weights
-- candidates in order of preference; opts.variant = "fp16" prefers the variant
function L.weight_files(dir, base, variant)
  local names = {}
  -- a variant as transformers and diffusers name it: BASE.fp16.safetensors,
  -- shards named by BASE.safetensors.index.fp16.json (or BASE.fp16.safetensors.index.json)
  local function add(v)
    local stem = base .. (v and ("." .. v) or "")
    names[#names + 1] = { single = dir .. "/" .. stem .. ".safetensors", index = dir .. "/" .. stem .. ".safetensors.index.json" }
    if v then names[#names + 1] = { single = "", index = dir .. "/" .. base .. ".safetensors.index." .. v .. ".json" } end
  end
  if variant then add(variant) end
  add(nil)
  if not variant then add("fp16"); add("bf16") end
  for _, n in ipairs(names) do
    if n.single ~= "" and exists(n.single) then return { n.single } end
    if exists(n.index) then
      local idx = L.read_json(n.index, "load")
      if type(idx.weight_map) ~= "table" then
        error(("load: '%s' has no weight_map"):format(n.index), 0)
      end
      local seen, files = {}, {}
      for _, f in pairs(idx.weight_map) do
        if not seen[f] then seen[f] = true; files[#files + 1] = dir .. "/" .. f end
      end
      table.sort(files)
      for _, f in ipairs(files) do
        if not exists(f) then error(("load: shard '%s' named by '%s' is missing"):format(f, n.index), 0) end
      end
      return files
    end
  end
  return nil
end

-- the error for a folder without safetensors weights; PyTorch's pickle files
-- (.bin) are named, since a user who has them needs to know why they are not read
function L.no_weights(dir, base, what)
  local msg = ("%s: no weights in '%s' (expected %s.safetensors, %s.fp16.safetensors or a sharded %s.safetensors.index.json)")
    :format(what or "load", dir, base, base, base)
  local bin = base == "model" and "pytorch_model" or base
  for _, f in ipairs { bin .. ".bin", bin .. ".fp16.bin", bin .. ".bin.index.json", bin .. ".bin.index.fp16.json" } do
    if exists(dir .. "/" .. f) then
      msg = msg .. ("; it has %s, a PyTorch pickle, which fdm does not read because loading a pickle can run code: " ..
        "download the .safetensors files of the same model (the published IF folders have them)"):format(f)
      break
    end
  end
  error(msg, 0)
end

-- fdm.io.load_safetensors with its error as a message about the file, without
-- the Lua position of this call (a user's file being bad is not a bug here):
-- called straight from pcall, the C function's error carries no position
function L.load_safetensors(path, opts)
  local ok, t, meta = pcall(fdm.io.load_safetensors, path, opts)
  if not ok then error(t, 0) end
  return t, meta
end

function L.weights(dir, opts)
  opts = opts or {}
  local base = opts.base or "diffusion_pytorch_model"
  local files = L.weight_files(dir, base, opts.variant)
  if not files then L.no_weights(dir, base) end
  local params = {}
  for _, f in ipairs(files) do
    local t = L.load_safetensors(f, { mmap = opts.mmap ~= false })
    for k, v in pairs(t) do params[k] = v end
  end
  return params, files
end

local function shape_str(s)
  local p = {}
  for i = 1, #s do p[i] = tostring(s[i]) end
  return "[" .. table.concat(p, ", ") .. "]"
end
L.shape_str = shape_str

-- spec: {{name, shape}, ...}
function L.check(params, spec, what)
  local missing, wrong, known = {}, {}, {}
  for _, e in ipairs(spec) do
    local name, shape = e[1], e[2]
    known[name] = true
    local t = params[name]
    if t == nil then
      missing[#missing + 1] = name .. " " .. shape_str(shape)
    else
      local s = t.shape
      local ok = #s == #shape
      for i = 1, #shape do if s[i] ~= shape[i] then ok = false end end
      if not ok then wrong[#wrong + 1] = ("%s is %s, expected %s"):format(name, shape_str(s), shape_str(shape)) end
      local dt = t.dtype
      if dt ~= "float32" and dt ~= "float16" and dt ~= "bfloat16" then
        wrong[#wrong + 1] = ("%s has dtype %s (float32, float16 or bfloat16 expected)"):format(name, dt)
      end
    end
  end
  local extra = {}
  for k in pairs(params) do if not known[k] then extra[#extra + 1] = k end end
  table.sort(extra)
  if #missing > 0 or #wrong > 0 then
    local msg = { ("%s: the weights do not match the config"):format(what or "load") }
    local function list(title, l)
      if #l == 0 then return end
      local shown = {}
      for i = 1, math.min(#l, 12) do shown[i] = "  " .. l[i] end
      msg[#msg + 1] = ("%d %s:\n%s%s"):format(#l, title, table.concat(shown, "\n"), #l > 12 and ("\n  ... and " .. (#l - 12) .. " more") or "")
    end
    list("missing tensors", missing)
    list("tensors with the wrong shape or dtype", wrong)
    list("unexpected tensors", extra)
    error(table.concat(msg, "\n"), 0)
  end
  return extra
end

function L.numel(shape)
  local n = 1
  for i = 1, #shape do n = n * shape[i] end
  return n
end

function L.spec_params(spec)
  local n = 0
  for _, e in ipairs(spec) do n = n + L.numel(e[2]) end
  return n
end

-- MemAvailable in bytes (nil when /proc/meminfo is not there)
function L.mem_available()
  local s = L.read_file("/proc/meminfo")
  if not s then return nil end
  local kb = s:match("MemAvailable:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or nil
end

-- the bytes of the tensors of p (name -> tensor, named by spec {{name, shape}, ...}) not yet on dev
local ELEM = { float32 = 4, float16 = 2, bfloat16 = 2, int64 = 8 }
function L.bytes_to_move(spec, p, dev)
  local b = 0
  for _, e in ipairs(spec) do
    local t = p[e[1]]
    if t and t.device ~= dev then b = b + t:numel() * (ELEM[t.dtype] or 4) end
  end
  return b
end

-- refuses, before anything is copied, weights that the device dev cannot hold (what a new allocation could
-- still get there: its free memory and fdm's cache); a device that does not say is not checked
function L.check_device_memory(bytes, dev, what)
  if dev == "cpu" or bytes == 0 or os.getenv("FDM_SKIP_MEMORY_CHECK") then return end
  local avail, total = fdm.device_memory(dev)
  if avail and bytes > avail then
    local function size(b) return b < 1e9 and ("%.1f MB"):format(b / 1e6) or ("%.2f GB"):format(b / 1e9) end
    error(("%s needs %s on %s, which has %s available of %s; use --device cpu, a smaller model, " ..
      "or fewer models on the device at once (free_text_encoder() after the prompts are embedded)")
      :format(what, size(bytes), dev, size(avail), size(total)), 0)
  end
end

function L.check_memory(bytes, what)
  local avail = L.mem_available()
  if os.getenv("FDM_SKIP_MEMORY_CHECK") then return avail end
  if avail and bytes > avail then
    error(("%s needs about %.1f GB but only %.1f GB of memory is available; free memory, use the fp16 weights " ..
      "(keep them memory-mapped: --dtype float16), or a smaller model"):format(what, bytes / 1e9, avail / 1e9), 0)
  end
  return avail
end

-- bytes of a loaded parameter table (by each tensor's dtype)
function L.param_bytes(params)
  local b = 0
  for _, t in pairs(params) do
    local es = (t.dtype == "float16" or t.dtype == "bfloat16") and 2 or 4
    b = b + t:numel() * es
  end
  return b
end

-- a large model's collection between its blocks: the dead activations go back
-- to their allocator. On the CPU its cache is emptied too (bounds resident
-- memory); a device keeps its cache, whose blocks the next block and step
-- reuse: emptying it synchronised and cost every IF and T5 call about 0.1 s
-- in cudaFree/cudaMalloc on an H200 (the eager IF-I-M step took 0.105 s)
function L.collect(device)
  collectgarbage()
  if (device or "cpu") == "cpu" then fdm.empty_cache("cpu") end
end

-- peak resident memory of this process (VmHWM), bytes
function L.peak_rss()
  local s = L.read_file("/proc/self/status")
  local kb = s and s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or nil
end
function L.rss()
  local s = L.read_file("/proc/self/status")
  local kb = s and s:match("VmRSS:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or nil
end

---------------------------------------------------------------- the Hugging Face cache
-- a model id as from_pretrained takes it ("DeepFloyd/IF-I-M-v1.0", "@REVISION"
-- optional), when nothing of that name is on disk; a file name (a checkpoint)
-- is never an id
local FILE_EXT = { safetensors = true, ckpt = true, bin = true, pt = true, pth = true, json = true, lua = true, png = true }
function L.hub_id(name)
  if type(name) ~= "string" or exists(name) or exists(name .. "/.") then return nil end
  local org, repo, rev = name:match("^([%w][%w%-%._]*)/([%w][%w%-%._]*)@([%w%-%._]+)$")
  if not org then org, repo = name:match("^([%w][%w%-%._]*)/([%w][%w%-%._]*)$") end
  if not org then return nil end
  local ext = repo:match("%.(%w+)$")
  if ext and FILE_EXT[ext:lower()] then return nil end
  return { org = org, repo = repo, revision = rev or "main", name = name }
end

-- where huggingface_hub keeps its downloads (its own order of settings)
function L.hub_cache()
  local function env(k) local v = os.getenv(k); if v and v ~= "" then return v end end
  local c = env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE")
  if c then return c end
  if env("HF_HOME") then return env("HF_HOME") .. "/hub" end
  return (env("XDG_CACHE_HOME") or ((os.getenv("HOME") or "") .. "/.cache")) .. "/huggingface/hub"
end

-- models--ORG--NAME/refs/REVISION holds the commit whose snapshots/COMMIT/ is
-- the folder (its files are links into blobs/); a commit hash names it directly
function L.hub_snapshot(id)
  local repo_dir = ("%s/models--%s--%s"):format(L.hub_cache(), id.org, id.repo)
  local commit = id.revision
  local ref = L.read_file(repo_dir .. "/refs/" .. id.revision)
  if ref then commit = ref:match("^%s*(%x+)%s*$") or commit end
  local snap = repo_dir .. "/snapshots/" .. commit
  if exists(snap .. "/.") then return snap end
  if ref then   -- the ref is there, its files are not: an interrupted or cleaned-up download
    return nil, repo_dir, ("refs/%s names commit %s, but %s is missing"):format(id.revision, commit, snap)
  end
  return nil, repo_dir, ("no revision '%s' under %s"):format(id.revision, repo_dir)
end

return L
