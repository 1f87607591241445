-- tests/layering_spec.lua: the layers of runtime/ (docs/design.md), checked on
-- the compiled objects, where a grep of the sources can miss a call made
-- through a macro:
--   * every fdm_/cpu_ function an object calls is defined in its own layer or
--     a lower one (no cycles between layers);
--   * the ops touch no data: no fdm_data, BLAS or OpenMP symbol in their objects;
--   * lower layers include no header of a higher one.
local H = require "helpers"

local BUILD = os.getenv("FDM_BUILD")

-- rank of a layer: a layer may only use layers of lower or equal rank
local RANK = { base = 0, kernels = 1, io = 1, backend = 2, core = 3, ops = 4, autograd = 5, lua = 6, app = 7 }

-- the layer of an object or source path
local function layer_of(path)
  if path:find("kernels/") then return "kernels" end
  -- core's error and dtype helpers are the base every layer uses
  if path:find("runtime/core/error") or path:find("runtime/core/dtype") then return "base" end
  return path:match("runtime/(%w+)/")
end

local function lines(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function objects()
  return lines("find '" .. BUILD .. "/obj' -name '*.o' | sort")
end

describe("layers of the runtime", function()
  if not BUILD then
    it("needs FDM_BUILD (set by make test)", function() error("FDM_BUILD is not set: run through make test") end)
    return
  end

  it("calls go only to the same or lower layers", function()
    local defined = {}   -- symbol -> layer
    for _, o in ipairs(objects()) do
      for _, l in ipairs(lines("nm -g --defined-only '" .. o .. "'")) do
        local sym = l:match("%x+ [TDBR] (%S+)$")
        if sym then defined[sym] = layer_of(o) end
      end
    end
    local bad = {}
    for _, o in ipairs(objects()) do
      local me = layer_of(o)
      assert(me and RANK[me], "object outside the known layers: " .. o)
      for _, l in ipairs(lines("nm -u '" .. o .. "'")) do
        local sym = l:match("U (%S+)$")
        local there = sym and defined[sym]
        if there and RANK[there] > RANK[me] then
          bad[#bad + 1] = ("%s (%s) calls %s of layer %s"):format(o:gsub(".*/obj/", ""), me, sym, there)
        end
      end
    end
    assert(#bad == 0, "calls into higher layers:\n" .. table.concat(bad, "\n"))
  end)

  it("the executable's files do not call each other both ways", function()
    local app = lines("ls '" .. BUILD .. "'/obj/runtime/app/*.o")
    local defs, uses = {}, {}
    for _, o in ipairs(app) do
      defs[o], uses[o] = {}, {}
      for _, l in ipairs(lines("nm -g --defined-only '" .. o .. "'")) do
        local sym = l:match("%x+ [TDBR] (%S+)$")
        if sym then defs[o][sym] = true end
      end
      for _, l in ipairs(lines("nm -u '" .. o .. "'")) do
        local sym = l:match("U (%S+)$")
        if sym then uses[o][sym] = true end
      end
    end
    local function calls(a, b)
      for sym in pairs(uses[a]) do if defs[b][sym] then return sym end end
    end
    for _, a in ipairs(app) do
      for _, b in ipairs(app) do
        local ab, ba = calls(a, b), calls(b, a)
        assert(not (a < b and ab and ba), ("%s and %s call each other (%s, %s)"):format(a, b, tostring(ab), tostring(ba)))
      end
    end
  end)

  it("the op layer touches no tensor data (no fdm_data, BLAS or OpenMP)", function()
    local bad = {}
    local n = 0
    for _, o in ipairs(lines("ls '" .. BUILD .. "'/obj/runtime/ops/*.o '" .. BUILD .. "'/obj/runtime/autograd/*.o")) do
      n = n + 1
      for _, l in ipairs(lines("nm -u '" .. o .. "'")) do
        local sym = l:match("U (%S+)$")
        if sym and (sym == "fdm_data" or sym:find("^cblas_") or sym:find("^GOMP_") or sym:find("^omp_")) then
          bad[#bad + 1] = o:gsub(".*/obj/", "") .. ": " .. sym
        end
      end
    end
    assert(n >= 9, "expected the op and autograd objects, found " .. n)
    assert(#bad == 0, "data access in the op layer:\n" .. table.concat(bad, "\n"))
  end)

  it("the checks above catch a violation (the check itself is live)", function()
    -- an object that calls fdm_data and cblas_sgemm must be reported by nm -u
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
    local f = assert(io.open(dir .. "/bad.c", "w"))
    f:write('void *fdm_data(const void *t); void cblas_sgemm(void);\n',
            'void *bad(void *t) { cblas_sgemm(); return fdm_data(t); }\n')
    f:close()
    assert(os.execute("cc -c -o " .. dir .. "/bad.o " .. dir .. "/bad.c"))
    local u = table.concat(lines("nm -u " .. dir .. "/bad.o"), "\n")
    os.execute("rm -rf " .. dir)
    assert.truthy(u:find("fdm_data", 1, true))
    assert.truthy(u:find("cblas_sgemm", 1, true))
  end)

  it("lower layers include no header of a higher one", function()
    local root = H.here("..")
    -- headers and the layer that owns them
    local owner = {
      ["fdm_ops.h"] = "ops", ["fdm_nnops.h"] = "ops", ["fdm_internal.h"] = "ops",
      ["fdm_engine.h"] = "autograd", ["fdm_lua.h"] = "lua", ["fdm_repl.h"] = "app",
      ["fdm_io.h"] = "io", ["fdm_backend.h"] = "backend", ["fdm_autograd.h"] = "core",
    }
    local bad = {}
    for _, src in ipairs(lines("cd '" .. root .. "' && ls runtime/*/*.c kernels/*/*.c")) do
      local me = layer_of(src)
      for l in io.lines(root .. "/" .. src) do
        local hdr = l:match('^#include "([^"]+)"')
        local there = hdr and owner[hdr]
        -- io is a sibling of the kernels (file formats): only lua and app use it
        if there and (RANK[there] > RANK[me] or (there == "io" and me ~= "io" and RANK[me] < RANK.lua)) then
          bad[#bad + 1] = src .. " includes " .. hdr .. " (" .. there .. ")"
        end
      end
    end
    assert(#bad == 0, table.concat(bad, "\n"))
  end)
end)
