-- fdm from anywhere: the demo from another working directory, `fdm NAME`,
-- an installed tree (`make install PREFIX=...`) that finds its scripts and
-- weights, FDM_WEIGHTS, and the LuaRocks module (`luarocks make`).
local BIN = os.getenv("FDM_BIN") or "build/fdm"
local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function sh(cmd)   -- -> output (stdout and stderr), exit code
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\"", "r"))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("__rc=(%d+)\n$"))
  return out:gsub("__rc=%d+\n$", ""), code
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. q(d)))
  return d
end

local function is_png(p)
  local f = io.open(p, "rb")
  if not f then return false end
  local s = f:read(8)
  f:close()
  return s == "\137PNG\r\n\26\n"
end

local ROOT = (sh("pwd")):gsub("%s+$", "")
local ABS_BIN = BIN:sub(1, 1) == "/" and BIN or (ROOT .. "/" .. BIN)
-- a clean environment: nothing may point back into the source tree
local CLEAN = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u FDM_LUA_PATH -u FDM_WEIGHTS "
local QUICK = " --n 1 --steps 3 --out anagram.png"

describe("fdm from anywhere", function()
  it("runs the demo from another working directory, by path and by name", function()
    local d = tmpdir()
    local out, code = sh("cd " .. q(d) .. " && " .. CLEAN .. q(ABS_BIN) .. " " .. q(ROOT .. "/scripts/anagram.lua") .. QUICK)
    assert.are.equal(0, code, out)
    assert.is_true(is_png(d .. "/anagram.png"), out)
    os.remove(d .. "/anagram.png")
    out, code = sh("cd " .. q(d) .. " && " .. CLEAN .. q(ABS_BIN) .. " anagram" .. QUICK)
    assert.are.equal(0, code, out)
    assert.is_true(is_png(d .. "/anagram.png"), out)
    -- the source tree's own spelling works from anywhere too
    os.remove(d .. "/anagram.png")
    out, code = sh("cd " .. q(d) .. " && " .. CLEAN .. q(ABS_BIN) .. " scripts/anagram.lua" .. QUICK)
    assert.are.equal(0, code, out)
    os.execute("rm -rf " .. q(d))
  end)

  it("FDM_WEIGHTS comes first in the search for shipped weights", function()
    local d = tmpdir()
    assert(os.execute("cp weights/ddpm_mnist.safetensors " .. q(d) .. "/"))
    local out, code = sh("cd / && " .. CLEAN .. "FDM_WEIGHTS=" .. q("/nonexistent:" .. d) .. " " .. q(ABS_BIN) ..
      " -e 'print(require(\"fdm.weights\").resolve(\"weights/ddpm_mnist.safetensors\"))'")
    assert.are.equal(0, code, out)
    assert.are.equal(d .. "/ddpm_mnist.safetensors\n", out)
    os.execute("rm -rf " .. q(d))
  end)

  it("make install PREFIX=tmp: fdm NAME runs the installed script with the installed weights", function()
    local prefix, work = tmpdir(), tmpdir()
    local out, code = sh("make -s install PREFIX=" .. q(prefix))
    assert.are.equal(0, code, out)
    for _, f in ipairs({ "bin/fdm", "lib/lua/5.4/fdm/core.so", "share/lua/5.4/fdm/init.lua",
                         "share/fdm/scripts/anagram.lua", "share/fdm/scripts/partA/common.lua",
                         "share/fdm/weights/ddpm_mnist.safetensors", "share/fdm/weights/ddpm_mnist.md",
                         "share/doc/fdm/README.md", "share/doc/fdm/docs/api.md" }) do
      assert.is_true(os.rename(prefix .. "/" .. f, prefix .. "/" .. f), "not installed: " .. f)
    end
    local fdm = CLEAN .. q(prefix .. "/bin/fdm")
    -- the installed Lua files and weights, not the source tree's
    out, code = sh("cd " .. q(work) .. " && " .. fdm .. " -e 'print(package.searchpath(\"fdm.weights\", package.path)); " ..
      "print(require(\"fdm.weights\").resolve(\"weights/ddpm_mnist.safetensors\"))'")
    assert.are.equal(0, code, out)
    assert.are.equal(prefix .. "/share/lua/5.4/fdm/weights.lua\n" .. prefix .. "/share/fdm/weights/ddpm_mnist.safetensors\n", out)
    out, code = sh("cd " .. q(work) .. " && " .. fdm .. " anagram" .. QUICK)
    assert.are.equal(0, code, out)
    assert.is_true(is_png(work .. "/anagram.png"), out)
    out, code = sh("cd " .. q(work) .. " && " .. fdm .. " partA/1_1_forward --help")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("usage: fdm scripts/partA/1_1_forward.lua", 1, true), out)
    out, code = sh("cd " .. q(work) .. " && " .. fdm .. " no_such_script")
    assert.are.equal(2, code, out)
    assert.truthy(out:find(prefix .. "/share/fdm/scripts", 1, true), out)
    os.execute("rm -rf " .. q(prefix) .. " " .. q(work))
  end)

  it("luarocks make installs the module into a tree; require 'fdm' works from it", function()
    local tree = tmpdir()
    local lr = "luarocks --lua-version=5.4 --tree=" .. q(tree)
    local out, code = sh(lr .. " make fdm-0.1.0-1.rockspec")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("fdm 0.1.0-1 is now installed", 1, true), out)
    out, code = sh("cd / && eval \"$(" .. CLEAN .. lr .. " path)\" && " ..
      "lua5.4 -e 'local fdm = require \"fdm\"; print(package.searchpath(\"fdm\", package.path)); " ..
      "print(package.searchpath(\"fdm.core\", package.cpath)); print(fdm.ones(2, 3):sum():item())'")
    assert.are.equal(0, code, out)
    assert.are.equal(tree .. "/share/lua/5.4/fdm/init.lua\n" .. tree .. "/lib/lua/5.4/fdm/core.so\n6.0\n", out)
    os.execute("rm -rf " .. q(tree))
  end)
end)
