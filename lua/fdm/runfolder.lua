-- fdm.runfolder: one run per output folder.
--
--   require("fdm.runfolder").acquire(out)   -- at the start of a run, before writing into out
--
-- acquire creates the folder, takes an exclusive lock on OUT/.fdm-lock
-- (flock: a second run with the same --out stops with an error naming the
-- PID that holds it; the lock of a killed run goes away with its process, so
-- a stale lock file does not block), then removes the temporary files that
-- atomic writes of a killed run left behind (NAME.tmp.XXXXXX). The lock is
-- held until the process exits (or runfolder.release(out)); acquiring a
-- folder this process already holds is a no-op, so a script may call
-- train.run several times on one folder.
local fdm = require "fdm"

local M = {}
local held = {}   -- folder -> lock object (kept alive: collecting it would release the lock)

local function mkdir(path)
  local ok = os.execute("mkdir -p '" .. path:gsub("'", "'\\''") .. "'")
  if not ok then error("cannot create directory " .. path, 0) end
end

local function key(path)
  return (path:gsub("/+$", ""))
end

-- returns the list of stale temporaries it removed
function M.acquire(out)
  assert(type(out) == "string" and out ~= "", "runfolder.acquire: a folder name expected")
  local k = key(out)
  if held[k] then return {} end
  mkdir(out)
  local lock, holder = fdm.io.lock(k .. "/.fdm-lock")
  if not lock then
    -- the user's situation, not a bug: printed in one line, no stack trace
    local UserError = { __name = "fdm.UsageError", __tostring = function(e) return e.message end }
    error(setmetatable({ message = string.format("%s is in use by another run (process %s holds %s/.fdm-lock); " ..
      "wait for it to finish or use another --out", out, tostring(holder), k) }, UserError), 0)
  end
  held[k] = lock
  return fdm.io.remove_temporaries(k)
end

function M.release(out)
  local k = key(out)
  if held[k] then held[k]:release(); held[k] = nil end
end

function M.holds(out) return held[key(out)] ~= nil end

return M
