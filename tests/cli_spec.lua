-- The `fdm` executable (runtime/app/main.c, runtime/app/repl.c): command line,
-- exit codes, errors, the piped REPL and tab-completion candidates.
-- Runs the built binary: FDM_BIN, else build/fdm (relative to the repo root,
-- where `make test` runs busted).

local BIN = os.getenv("FDM_BIN") or "build/fdm"

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function tmpfile(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(content or "")
  f:close()
  return name
end

local slurp = require("helpers").slurp

-- runs `fdm <args>`: args is a list of words (quoted for the shell here);
-- opts.stdin: text piped in (else /dev/null); opts.env: extra environment.
-- Returns stdout, stderr, exit code (read from the shell, so any Lua runs it).
local function fdm(args, opts)
  opts = opts or {}
  local words = {}
  for k, v in pairs(opts.env or {}) do words[#words + 1] = k .. "=" .. q(v) end
  words[#words + 1] = q(BIN)
  for _, a in ipairs(args or {}) do words[#words + 1] = q(a) end
  local input = opts.stdin and tmpfile(opts.stdin)
  local errf = os.tmpname()
  local cmd = table.concat(words, " ") .. " <" .. (input or "/dev/null") ..
              " 2>" .. errf .. "; echo \"__rc=$?\""
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  local err = slurp(errf)
  os.remove(errf)
  if input then os.remove(input) end
  local code = tonumber(out:match("__rc=(%d+)\n$"))
  out = out:gsub("__rc=%d+\n$", "")
  return out, err, code
end

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

describe("fdm command line", function()
  it("runs a script with arg and ... as lua5.4 does", function()
    local s = tmpfile([[
print(arg[0] == SCRIPT, arg[1], arg[2], #arg, select('#', ...), ...)
print(arg[-1] ~= nil, type(fdm), fdm == require "fdm")
]])
    local body = slurp(s)
    local f = assert(io.open(s, "w"))
    f:write("local SCRIPT = " .. string.format("%q", s) .. "\n" .. body)
    f:close()
    local out, err, code = fdm({s, "a", "b c"})
    os.remove(s)
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.same({"true\ta\tb c\t2\t2\ta\tb c", "true\ttable\ttrue"}, lines(out))
  end)

  it("puts the interpreter and options at negative arg indices", function()
    local s = tmpfile("print(arg[-1], arg[-2], arg[-3] == " .. string.format("%q", BIN) .. ", arg[-4])")
    local out, _, code = fdm({"-e", "x=1", s})
    os.remove(s)
    assert.are.equal(0, code)
    assert.are.equal("x=1\t-e\ttrue\tnil\n", out)
  end)

  it("runs -e code, several in order, then the script", function()
    local s = tmpfile("print('script', x)")
    local out, err, code = fdm({"-e", "x = 1", "-e", "print('e', x); x = x + 1", s})
    os.remove(s)
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal("e\t1\nscript\t2\n", out)
  end)

  it("-l requires a module into a global", function()
    local out, _, code = fdm({"-l", "string", "-e", "print(string.rep('x', 3))"})
    assert.are.equal(0, code)
    assert.are.equal("xxx\n", out)
  end)

  it("-v and --version print the version, -h and --help the usage", function()
    for _, v in ipairs({"-v", "--version"}) do
      local out, _, code = fdm({v})
      assert.are.equal(0, code)
      assert.truthy(out:match("^fdm %d+%.%d+%S* %(Lua 5%.4"))
    end
    for _, h in ipairs({"-h", "--help"}) do
      local out, err, code = fdm({h})
      assert.are.equal(0, code)
      assert.are.equal("", err)
      assert.truthy(out:match("^usage: fdm"))
      assert.truthy(out:find("-i", 1, true))
      assert.truthy(out:find("fdm anagram", 1, true))
    end
  end)

  it("rejects an unknown option in one line with status 2", function()
    local out, err, code = fdm({"-Z"})
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.truthy(err:match("^fdm: unrecognized option '%-Z' %(options: [^\n]*%-%-help[^\n]*%)\n$"), err)
    _, err, code = fdm({"--nope"})
    assert.are.equal(2, code)
    assert.truthy(err:match("^fdm: unrecognized option '%-%-nope'"), err)
    _, err, code = fdm({"-e"})
    assert.are.equal(2, code)
    assert.truthy(err:match("^fdm: option '%-e' needs an argument %(the Lua code to run%)\n$"), err)
  end)

  it("prints a usage error in one line without a trace, status 2; FDM_DEBUG=1 adds the trace", function()
    local code = "require('fdm.cli').usage_error('thing: --x expects a number, got \\'y\\'')"
    local out, err, rc = fdm({"-e", code})
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.are.equal("fdm: thing: --x expects a number, got 'y'\n", err)
    _, err, rc = fdm({"-e", code}, {env = {FDM_DEBUG = "1"}})
    assert.are.equal(2, rc)
    assert.truthy(err:match("^fdm: thing: %-%-x expects a number, got 'y'\nstack traceback:"), err)
    -- any other error is a bug: it keeps its trace and status 1
    _, err, rc = fdm({"-e", "error('a bug')"})
    assert.are.equal(1, rc)
    assert.truthy(err:find("stack traceback:", 1, true))
  end)

  it("respects os.exit codes", function()
    local _, _, code = fdm({"-e", "os.exit(3)"})
    assert.are.equal(3, code)
    _, _, code = fdm({"-e", "os.exit(false)"})
    assert.are.equal(1, code)
    _, _, code = fdm({"-e", "os.exit(true, true)"})
    assert.are.equal(0, code)
  end)

  it("reports a failing script as 'fdm: <message>' with a traceback, status 1", function()
    local s = tmpfile("print('before')\nlocal function f() error('boom') end\nf()\nprint('after')\n")
    local out, err, code = fdm({s})
    os.remove(s)
    assert.are.equal(1, code)
    assert.are.equal("before\n", out)
    assert.truthy(err:match("^fdm: [^\n]*:2: boom\n"))
    assert.truthy(err:find("stack traceback:", 1, true))
  end)

  it("reports syntax errors, missing files and non-string errors", function()
    local s = tmpfile("x = = 1")
    local _, err, code = fdm({s})
    os.remove(s)
    assert.are.equal(1, code)
    assert.truthy(err:match("^fdm: .*unexpected symbol"))
    _, err, code = fdm({"/nonexistent/script.lua"})
    assert.are.equal(2, code)
    assert.are.equal("fdm: cannot open /nonexistent/script.lua: no such file\n", err)
    _, err, code = fdm({"no_such_script"})
    assert.are.equal(2, code)
    assert.truthy(err:match("^fdm: cannot open no_such_script: no such file, and no script of that name in [^\n]*/scripts\n$"), err)
    _, err, code = fdm({"-e", "error({})"})
    assert.are.equal(1, code)
    assert.truthy(err:find("error object is a table value", 1, true))
    _, err, code = fdm({"-e", "error(setmetatable({}, {__tostring = function() return 'custom' end}))"})
    assert.are.equal(1, code)
    assert.truthy(err:match("^fdm: custom"))
  end)

  it("stops at the first failing -e and does not run the script", function()
    local s = tmpfile("print('script ran')")
    local out, err, code = fdm({"-e", "error('first')", s})
    os.remove(s)
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.truthy(err:match("^fdm: %(command line%):1: first"))
  end)

  it("runs piped stdin as a script when given no arguments, as lua does", function()
    local out, err, code = fdm({}, {stdin = "print(1+1)\nlocal x = 5\nprint(x)\n"})
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal("2\n5\n", out)
    out, err, code = fdm({"-", "p", "q"}, {stdin = "print(...)"})
    assert.are.equal(0, code)
    assert.are.equal("p\tq\n", out)
    _, err, code = fdm({}, {stdin = "error('piped')"})
    assert.are.equal(1, code)
    assert.truthy(err:match("^fdm: stdin:1: piped"))
  end)

  it("finds the Lua library through FDM_LUA_PATH", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir .. "/fdm")))
    local f = assert(io.open(dir .. "/fdm/init.lua", "w"))
    f:write("return {fake = 'from FDM_LUA_PATH'}")
    f:close()
    local out, err, code = fdm({"-e", "print(fdm.fake)"}, {env = {FDM_LUA_PATH = dir}})
    local out2 = fdm({"-e", "print(fdm.fake)"}, {env = {FDM_LUA_PATH = dir .. "/?.lua;" .. dir .. "/?/init.lua"}})
    os.execute("rm -rf " .. q(dir))
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal("from FDM_LUA_PATH\n", out)
    assert.are.equal("from FDM_LUA_PATH\n", out2)
  end)

  it("preloads the linked C core as fdm.core", function()
    local out, _, code = fdm({"-e", "print(type(package.preload['fdm.core']), type(require 'fdm.core'))"})
    assert.are.equal(0, code)
    assert.are.equal("function\ttable\n", out)
  end)

  it("turns SIGINT in a running chunk into the error 'interrupted!'", function()
    -- the chunk says when it runs (the handler is then set); it gives up
    -- by itself after 10 s, so a lost signal fails the test without a hang
    local errf, outf = os.tmpname(), os.tmpname()
    local code = "io.write('ready\\n') io.flush() local t = os.time() " ..
                 "while os.time() - t < 10 do end print('not interrupted')"
    local cmd = q(BIN) .. " -e " .. q(code) .. " >" .. outf .. " 2>" .. errf .. " & pid=$!; " ..
                "i=0; while ! grep -q ready " .. outf .. " && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; " ..
                "kill -INT $pid; wait $pid; echo $?"
    local p = assert(io.popen(cmd))
    local rc = tonumber(p:read("a"):match("(%d+)"))
    p:close()
    local err, out = slurp(errf), slurp(outf)
    os.remove(errf)
    os.remove(outf)
    assert.are.equal(1, rc)
    assert.are.equal("ready\n", out)
    assert.truthy(err:match("^fdm: .*interrupted!"))
  end)
end)

describe("fdm -i with piped input (the REPL, non-interactive)", function()
  it("prints expression values and keeps going after an error", function()
    local out, err, code = fdm({"-i"}, {stdin = "1+2\nerror('mid')\nx = 10\nx * 2\n"})
    assert.are.equal(0, code)
    assert.are.equal("3\n20\n", out)
    assert.truthy(err:match("^fdm: stdin:1: mid\n"))
  end)

  it("separates several results by tabs, via tostring, and prints nil", function()
    local out, _, code = fdm({"-i"}, {stdin = table.concat({
      "1, 'two', nil, true",
      "setmetatable({}, {__tostring = function() return 'custom!' end})",
      "nil",
      "local y = 3",       -- a statement prints nothing
      "print('printed')",  -- a call returning nothing prints nothing more
      "=4+4",              -- Lua 5.2's '=' prefix
    }, "\n") .. "\n"})
    assert.are.equal(0, code)
    assert.are.equal("1\ttwo\tnil\ttrue\ncustom!\nnil\nprinted\n8\n", out)
  end)

  it("prints tensors through their __tostring", function()
    local expected = fdm({"-e", "io.write(tostring(fdm.zeros(2)))"})
    local out, err, code = fdm({"-i"}, {stdin = "fdm.zeros(2)\n"})
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal(expected .. "\n", out)
  end)

  it("continues incomplete chunks over several lines", function()
    local out, err, code = fdm({"-i"}, {stdin = table.concat({
      "function f(a,", "  b)", "  return a + b", "end",
      "f(1, 2)",
      "t = {", "1, 2,", "3}", "#t",
      "for i = 1, 2 do", "print(i)", "end",
    }, "\n") .. "\n"})
    assert.are.equal("", err)
    assert.are.equal(0, code)
    assert.are.equal("3\n3\n1\n2\n", out)
  end)

  it("reports a chunk left incomplete at end of input", function()
    local out, err, code = fdm({"-i"}, {stdin = "1\nfunction g()\n"})
    assert.are.equal(0, code)
    assert.are.equal("1\n", out)
    assert.truthy(err:find("<eof>", 1, true))
  end)

  it("a runtime error inside a multi-line chunk does not stop later lines", function()
    local out, err = fdm({"-i"}, {stdin = "do\nlocal z = nil\nz()\nend\n'after'\n"})
    assert.are.equal("after\n", out)
    assert.truthy(err:match("^fdm: stdin:3: attempt to call"))
  end)

  it("runs the script or -e code first, then the REPL, with the same state", function()
    local s = tmpfile("answer = 41")
    local out, _, code = fdm({"-i", s}, {stdin = "answer + 1\n"})
    os.remove(s)
    assert.are.equal(0, code)
    assert.are.equal("42\n", out)
    out = fdm({"-e", "v = 'e'", "-i"}, {stdin = "v\n"})
    assert.are.equal("e\n", out)
  end)

  it("has fdm as a global and a help()", function()
    local out, _, code = fdm({"-i"}, {stdin = "type(fdm)\nhelp()\n"})
    assert.are.equal(0, code)
    assert.truthy(out:match("^table\n"))
    assert.truthy(out:find("api.md", 1, true))
    assert.truthy(out:find("fdm.", 1, true))
  end)

  it("help()'s model examples run as printed (the shipped DDPM's lines; IF needs its weights)", function()
    local out = fdm({"-e", "help()"})
    local code, seen = {}, false
    for _, l in ipairs(lines(out)) do
      if l:match("^Models") then seen = true
      elseif seen and l:match("^  ") and not l:find("deepfloyd", 1, true) then code[#code + 1] = (l:gsub("%-%-.*$", "")) end
    end
    assert.are.equal(3, #code, out)
    local H = require "helpers"
    local dir = H.tmpdir()
    local res, rc = H.sh(("cd %s && %s -e %s"):format(q(dir), q(BIN), q("fdm.manual_seed(1) " .. table.concat(code, " "))))
    assert.are.equal(0, rc, res)
    assert.is_true(H.exists(dir .. "/sevens.png"), res)
    os.execute("rm -rf " .. q(dir))
  end)

  it("respects os.exit inside the REPL", function()
    local out, _, code = fdm({"-i"}, {stdin = "1\nos.exit(5)\n2\n"})
    assert.are.equal(5, code)
    assert.are.equal("1\n", out)
  end)

  it("prints no banner or prompts when stdin is not a terminal", function()
    local out = fdm({"-i"}, {stdin = ""})
    assert.are.equal("", out)
  end)
end)

describe("--device auto (every script's default)", function()
  local H = require "helpers"
  local function run(env, extra)
    local dir = H.tmpdir()
    local out, rc = H.sh(("env -u FDM_DEVICE %s %s -e %s scripts/partA/1_1_forward.lua --out %s %s"):format(env, q(BIN),
      q("fdm.load_backend(os.getenv('FDM_FAKE_BACKEND'))"), q(dir), extra or ""))
    os.execute("rm -rf " .. q(dir))
    return out, rc
  end

  it("is the CPU on a machine without a GPU, said nowhere; the GPU where one answers, said once", function()
    local out, rc = run("")
    assert.are.equal(0, rc, out)
    if pcall(require("fdm").zeros, { 1 }, { device = "cuda" }) then
      assert.truthy(out:find("1_1_forward: running on cuda (--device auto found it; --device cpu keeps the CPU)", 1, true), out)
    else
      assert.is_nil(out:find("running on", 1, true), out)
    end
  end)

  it("is FDM_DEVICE when set, and the run says so; --device still wins", function()
    local out, rc = run("FDM_DEVICE=fake")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("1_1_forward: running on fake (FDM_DEVICE=fake)", 1, true), out)
    out, rc = run("FDM_DEVICE=fake", "--device cpu")
    assert.are.equal(0, rc, out)
    assert.is_nil(out:find("running on", 1, true), out)
  end)

  it("names FDM_DEVICE when the device it sets is not there (exit 2)", function()
    local out, rc = run("FDM_DEVICE=bogus")
    assert.are.equal(2, rc, out)
    assert.truthy(out:find("1_1_forward: FDM_DEVICE=bogus: unknown device 'bogus'", 1, true), out)
  end)

  it("is listed by --help as the default", function()
    local out = fdm({"scripts/partA/1_1_forward.lua", "--help"})
    assert.truthy(out:find("--device auto|cpu|cuda", 1, true), out)
    assert.truthy(out:find("(default: auto)", 1, true), out)
  end)
end)

describe("REPL tab completion candidates (fdm_repl_complete)", function()
  -- returns the candidates for each text, computed in a fresh fdm
  local function complete(setup, texts)
    local code = setup .. "\nfor _, s in ipairs{" ..
      table.concat((function() local t = {} for i, x in ipairs(texts) do t[i] = string.format("%q", x) end return t end)(), ",") ..
      "} do print(table.concat(fdm_repl_complete(s), ' ')) end"
    local out, err, rc = fdm({"-e", code}, {env = {FDM_TESTING = "1"}})
    assert.are.equal("", err)
    assert.are.equal(0, rc)
    local res = {}
    for i, l in ipairs(lines(out)) do res[texts[i]] = l end
    return res
  end
  local function words(s) local t = {} for w in s:gmatch("%S+") do t[#t + 1] = w end return t end
  local function has(list, w) for _, x in ipairs(list) do if x == w then return true end end return false end

  it("is absent unless FDM_TESTING is set", function()
    local out = fdm({"-e", "print(fdm_repl_complete)"})
    assert.are.equal("nil\n", out)
  end)

  it("offers the modules that load on first use, and completes inside one once named", function()
    local r = complete("", {"fdm.dif", "fdm.deep", "fdm.diffusion.samp"})
    assert.are.equal("fdm.diffusion", r["fdm.dif"])
    assert.are.equal("fdm.deepfloyd", r["fdm.deep"])
    assert.truthy(has(words(r["fdm.diffusion.samp"]), "fdm.diffusion.sample"), r["fdm.diffusion.samp"])
  end)

  it("completes globals and keywords", function()
    local r = complete("", {"pri", "wh", "fd", "zzzz"})
    assert.are.equal("print", r.pri)
    assert.are.equal("while", r.wh)
    assert.truthy(has(words(r.fd), "fdm"))
    assert.are.equal("", r.zzzz)
  end)

  it("completes fields after '.', through nested tables", function()
    local r = complete("", {"fdm.ze", "fdm.F.con", "string.fo", "math.pi.x", "nope.x", "fdm..z"})
    local ze = words(r["fdm.ze"])
    assert.truthy(has(ze, "fdm.zeros"))
    assert.truthy(has(ze, "fdm.zeros_like"))
    for _, w in ipairs(ze) do assert.truthy(w:match("^fdm%.ze")) end
    local con = words(r["fdm.F.con"])
    assert.truthy(has(con, "fdm.F.conv2d"))
    assert.truthy(has(con, "fdm.F.conv_transpose2d"))
    assert.are.equal("string.format", r["string.fo"])
    assert.are.equal("", r["math.pi.x"])
    assert.are.equal("", r["nope.x"])
    assert.are.equal("", r["fdm..z"])
  end)

  it("completes tensor methods after ':' from the metatable", function()
    local r = complete("t = fdm.zeros(2, 3); box = {t = t}", {"t:res", "t:", "t:zzz", "box.t:res"})
    assert.are.equal((r["t:res"]:gsub("t:", "box.t:")), r["box.t:res"])
    -- through the tensor's __index: t.dtype is a string, with string methods
    assert.are.equal("t.dtype:upper", complete("t = fdm.zeros(2)", {"t.dtype:up"})["t.dtype:up"])
    assert.truthy(has(words(r["t:res"]), "t:reshape"))
    for _, w in ipairs(words(r["t:res"])) do assert.truthy(w:match("^t:res")) end
    local all = words(r["t:"])
    assert.truthy(has(all, "t:sum"))
    assert.truthy(has(all, "t:view"))
    for _, w in ipairs(all) do assert.falsy(w:match("^t:__")) end  -- no metamethods
    assert.are.equal("", r["t:zzz"])
  end)

  it("walks __index chains and lists methods only after ':'", function()
    local setup = [[
Base = {greet = function() end, level = 1}; Base.__index = Base
Mid = setmetatable({walk = function() end}, Base); Mid.__index = Mid
obj = setmetatable({own = function() end, val = 3}, Mid)
s = "text"
]]
    local r = complete(setup, {"obj:", "obj.", "obj:w", "s:up", "obj.__in"})
    assert.are.equal("obj:greet obj:own obj:walk", r["obj:"])
    assert.are.equal("obj.greet obj.level obj.own obj.val obj.walk", r["obj."])
    assert.are.equal("obj:walk", r["obj:w"])
    assert.are.equal("s:upper", r["s:up"])
    assert.are.equal("obj.__index", r["obj.__in"])  -- shown once '_' is typed
  end)

  it("finds methods kept in the metatable when __index is a function", function()
    local setup = [[
local mt = {}
mt.__index = function(self, k) return k == "shape" and {2} or mt[k] end
mt.resize = function() end
mt.reshape = function() end
u = setmetatable({}, mt)
bad = setmetatable({}, {__index = function() error("no such field") end})
s = "text"
]]
    local r = complete(setup, {"u:res", "u:", "bad.x.y", "io.stdout:wr", "s.len.x", "u.shape.x"})
    assert.are.equal("", r["s.len.x"])    -- ("text").len is string.len: no fields
    assert.are.equal("", r["u.shape.x"])  -- {2} has no x...
    assert.are.equal("u:reshape u:resize", r["u:res"])
    assert.are.equal("u:reshape u:resize", r["u:"])
    assert.are.equal("", r["bad.x.y"])  -- an erroring __index: no candidates
    assert.are.equal("io.stdout:write", r["io.stdout:wr"])  -- file methods
  end)
end)
