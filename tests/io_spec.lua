-- tests of fdm.io: PNG, safetensors, IDX, grids, GIFs, plots.
local fdm = require "fdm"
local H = require "helpers"
local raises = H.raises
local tmpdir, readall, writeall = H.tmpdir, H.readall, H.writeall
local fio = fdm.io

local function flat(t)
  local out = {}
  local function rec(x)
    if type(x) == "table" then for _, v in ipairs(x) do rec(v) end
    else out[#out + 1] = x end
  end
  rec(t:tolist())
  return out
end

local function maxdiff(a, b)
  local fa, fb = flat(a), flat(b)
  assert(#fa == #fb, "sizes differ")
  local m = 0
  for i = 1, #fa do
    local d = math.abs((tonumber(fa[i]) or (fa[i] and 1 or 0)) - (tonumber(fb[i]) or (fb[i] and 1 or 0)))
    if d > m then m = d end
  end
  return m
end

local function same_shape(t, s)
  local sh = t.shape
  if #sh ~= #s then return false end
  for i = 1, #s do if sh[i] ~= s[i] then return false end end
  return true
end

-- asserts that f raises an error whose message contains every given string

local function no_temporaries(dir)
  local p = io.popen("ls -a '" .. dir .. "'")
  local names = p:read("a")
  p:close()
  assert(not names:find("%.tmp%."), "temporary file left behind: " .. names)
end

describe("fdm.io png", function()
  local dir = tmpdir()
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  for _, c in ipairs({1, 3, 4}) do
    it("round-trips uint8 with " .. c .. " channels", function()
      local t = fdm.randint(0, 256, {c, 5, 7}):to("uint8")
      local p = dir .. "/u" .. c .. ".png"
      fio.write_png(p, t)
      local r = fio.read_png(p, {range = "byte"})
      assert.equal("uint8", r.dtype)
      assert.is_true(same_shape(r, {c, 5, 7}))
      assert.equal(0, maxdiff(r, t))
      local f = fio.read_png(p)
      assert.equal("float32", f.dtype)
      assert.is_true(maxdiff(f, t:float() / 255) < 1e-6)
    end)
  end

  it("round-trips float images in [0,1] and [-1,1]", function()
    local t = fdm.rand(3, 6, 4)
    local p = dir .. "/f.png"
    fio.write_png(p, t)
    assert.is_true(maxdiff(fio.read_png(p), t) <= 0.5 / 255 + 1e-6)
    local m = t * 2 - 1
    fio.write_png(p, m, {range = "pm1"})
    local r = fio.read_png(p, {range = "pm1"})
    assert.is_true(maxdiff(r, m) <= 1 / 255 + 1e-6)
  end)

  it("writes [H,W] as gray and clamps out-of-range values", function()
    local t = fdm.tensor({{-1, 0, 0.5}, {1, 2, 0.25}})
    local p = dir .. "/g.png"
    fio.write_png(p, t)
    local r = fio.read_png(p, {range = "byte"})
    assert.is_true(same_shape(r, {1, 2, 3}))
    assert.same({0, 0, 128, 255, 255, 64}, flat(r))
  end)

  it("writes non-contiguous tensors", function()
    local t = fdm.rand(4, 5, 3):permute(3, 1, 2)
    local p = dir .. "/nc.png"
    fio.write_png(p, t)
    assert.is_true(maxdiff(fio.read_png(p), t) <= 0.5 / 255 + 1e-6)
  end)

  it("rejects bad shapes and options", function()
    raises(function() fio.write_png(dir .. "/x.png", fdm.rand(2, 4, 4)) end, "write_png", "x.png", "[2, 4, 4]")
    raises(function() fio.write_png(dir .. "/x.png", fdm.rand(4)) end, "write_png")
    raises(function() fio.write_png(dir .. "/x.png", fdm.rand(1, 4, 4), {range = "bogus"}) end, "range")
  end)

  it("raises on missing, corrupt and truncated files, naming the file", function()
    raises(function() fio.read_png(dir .. "/missing.png") end, "read_png", "missing.png")
    writeall(dir .. "/junk.png", "definitely not a png file")
    raises(function() fio.read_png(dir .. "/junk.png") end, "junk.png", "not a PNG")
    fio.write_png(dir .. "/ok.png", fdm.rand(3, 16, 16))
    local s = readall(dir .. "/ok.png")
    for _, n in ipairs({0, 7, 8, 20, 40, #s // 2, #s - 13, #s - 1}) do
      writeall(dir .. "/trunc.png", s:sub(1, n))
      raises(function() fio.read_png(dir .. "/trunc.png") end, "read_png", "trunc.png")
    end
    -- flip a byte inside IDAT: the CRC check catches it
    local i = #s - 20
    writeall(dir .. "/crc.png", s:sub(1, i - 1) .. string.char((s:byte(i) + 1) % 256) .. s:sub(i + 1))
    raises(function() fio.read_png(dir .. "/crc.png") end, "crc.png")
  end)

  it("fails cleanly when the directory does not exist", function()
    raises(function() fio.write_png(dir .. "/nodir/a.png", fdm.rand(1, 2, 2)) end, "nodir")
    no_temporaries(dir)
  end)
end)

-- builds a safetensors file from {name, dtype, shape, bytes} entries
local function st_file(entries, meta)
  local parts, off, data = {}, 0, {}
  if meta then parts[#parts + 1] = '"__metadata__":' .. meta end
  for _, e in ipairs(entries) do
    local shape = table.concat(e[3], ",")
    parts[#parts + 1] = ('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}'):format(
      e[1], e[2], shape, off, off + #e[4])
    off = off + #e[4]
    data[#data + 1] = e[4]
  end
  local h = "{" .. table.concat(parts, ",") .. "}"
  h = h .. string.rep(" ", (8 - #h % 8) % 8)
  return string.pack("<I8", #h) .. h .. table.concat(data)
end

local function packs(fmt, vals)
  local t = {}
  for i, v in ipairs(vals) do t[i] = string.pack(fmt, v) end
  return table.concat(t)
end

describe("fdm.io safetensors", function()
  local dir = tmpdir()
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("round-trips every core dtype, non-contiguous tensors and metadata", function()
    local base = fdm.randn(3, 4)
    local tensors = {
      f32 = base,
      f16 = base:half(),
      bf16 = base:bfloat16(),
      i64 = fdm.tensor({{-5, 7}, {1 << 40, 0}}, {dtype = "int64"}),
      u8 = fdm.randint(0, 256, {2, 3}):to("uint8"),
      b = fdm.tensor({1, 0, 1}):gt(0.5),
      tr = base:t(),                       -- non-contiguous
      scalar = fdm.tensor(3.5),
      ["weird \"name\"\\"] = fdm.zeros(0, 2),
    }
    local p = dir .. "/rt.safetensors"
    fio.save_safetensors(p, tensors, {format = "pt", note = "h\195\169llo \"q\""})
    local s = readall(p)
    local hl = string.unpack("<I8", s)
    assert.equal(0, hl % 8)
    local got, meta = fio.load_safetensors(p)
    assert.equal("pt", meta.format)
    assert.equal("h\195\169llo \"q\"", meta.note)
    for name, t in pairs(tensors) do
      local g = got[name]
      assert.is_not_nil(g, name)
      assert.equal(t.dtype, g.dtype, name)
      assert.is_true(same_shape(g, t.shape), name)
      assert.equal(0, maxdiff(g, t), name)
    end
    no_temporaries(dir)
  end)

  it("writes tensors sorted by dtype size, then name", function()
    local p = dir .. "/order.safetensors"
    fio.save_safetensors(p, {b = fdm.zeros(2), a = fdm.zeros(1), z = fdm.zeros(1, {dtype = "int64"}),
                             c = fdm.zeros(3):half()})
    local s = readall(p)
    local h = s:sub(9, 8 + string.unpack("<I8", s))
    local zpos, apos, bpos, cpos = h:find('"z"'), h:find('"a"'), h:find('"b"'), h:find('"c"')
    assert.is_true(zpos < apos and apos < bpos and bpos < cpos)
    assert.is_truthy(h:find('"z":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}', 1, true))
  end)

  it("loads every dtype of the format", function()
    local p = dir .. "/all.safetensors"
    writeall(p, st_file({
      {"f64", "F64", {2}, packs("<d", {1.5, -2.25})},
      {"f32", "F32", {2}, packs("<f", {0.5, -8})},
      {"f16", "F16", {2}, packs("<I2", {0x3C00, 0xC000})},     -- 1, -2
      {"bf16", "BF16", {2}, packs("<I2", {0x3F80, 0xC040})},   -- 1, -3
      {"i64", "I64", {2}, packs("<i8", {-3, 1 << 50})},
      {"i32", "I32", {1, 2}, packs("<i4", {-7, 1 << 30})},
      {"i16", "I16", {2}, packs("<i2", {-300, 300})},
      {"i8", "I8", {2}, packs("<i1", {-128, 127})},
      {"u8", "U8", {2}, packs("<I1", {0, 255})},
      {"bool", "BOOL", {3}, "\1\0\1"},
      {"sc", "F32", {}, packs("<f", {42})},
    }))
    local t = fio.load_safetensors(p)
    assert.equal("float32", t.f64.dtype); assert.same({1.5, -2.25}, t.f64:tolist())
    assert.same({0.5, -8}, t.f32:tolist())
    assert.equal("float16", t.f16.dtype); assert.same({1, -2}, t.f16:float():tolist())
    assert.equal("bfloat16", t.bf16.dtype); assert.same({1, -3}, t.bf16:float():tolist())
    assert.equal("int64", t.i64.dtype); assert.same({-3, 1 << 50}, t.i64:tolist())
    assert.equal("int64", t.i32.dtype); assert.same({{-7, 1 << 30}}, t.i32:tolist())
    assert.same({-300, 300}, t.i16:tolist())
    assert.same({-128, 127}, t.i8:tolist())
    assert.equal("uint8", t.u8.dtype); assert.same({0, 255}, t.u8:tolist())
    assert.equal("bool", t.bool.dtype); assert.same({true, false, true}, t.bool:tolist())
    assert.equal(0, #t.sc.shape); assert.equal(42, t.sc:item())
  end)

  it("raises on corrupt and truncated files, naming the file and the problem", function()
    local p = dir .. "/bad.safetensors"
    local good = st_file({{"a", "F32", {2, 2}, packs("<f", {1, 2, 3, 4})}, {"b", "U8", {3}, "xyz"}})
    local cases = {
      {"", "truncated"},
      {"\1\0\0", "truncated"},
      {string.pack("<I8", 1 << 40) .. "{}", "absurd"},
      {string.pack("<I8", 0xFFFFFFFF) .. "{}", "absurd"},
      {string.pack("<I8", 64) .. "{}", "exceeds the file size"},
      {string.pack("<I8", 8) .. "[]      ", "'{'"},
      {string.pack("<I8", 8) .. "{\"a\":1,}", "JSON"},
      {st_file({{"a", "F99", {1}, "x"}}), "unknown dtype"},
      {st_file({{"a", "F32", {3}, "12345678"}}), "data_offsets"},
      {st_file({{"a", "U8", {1, 1, 1, 1, 1, 1, 1, 1, 1}, "x"}}), "dimensions"},
      {st_file({}, '{"k":3}'), "__metadata__"},
      {good:sub(1, #good - 1), "beyond the data section"},
      {(function()
        local h = '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},' ..
                  '"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}'
        return string.pack("<I8", #h) .. h .. "abc"
      end)(), "overlap"},
    }
    for i, c in ipairs(cases) do
      writeall(p, c[1])
      raises(function() fio.load_safetensors(p) end, "load_safetensors", "bad.safetensors", c[2])
    end
    -- every truncation of a valid file fails
    for n = 0, #good - 1 do
      writeall(p, good:sub(1, n))
      raises(function() fio.load_safetensors(p) end, "bad.safetensors")
    end
    raises(function() fio.load_safetensors(dir .. "/missing.safetensors") end, "missing.safetensors")
  end)

  it("refuses bad tables when saving", function()
    local p = dir .. "/w.safetensors"
    raises(function() fio.save_safetensors(p, {a = 1}) end, "not a tensor")
    raises(function() fio.save_safetensors(p, {fdm.zeros(1)}) end, "names must be strings")
    raises(function() fio.save_safetensors(dir .. "/nodir/x.safetensors", {a = fdm.zeros(1)}) end, "nodir")
    no_temporaries(dir)
  end)

  it("reads the golden files (names, shapes, dtypes as in the header)", function()
    local map = {F32 = "float32", F16 = "float16", BF16 = "bfloat16", I64 = "int64", U8 = "uint8",
                 BOOL = "bool", F64 = "float32", I32 = "int64", I16 = "int64", I8 = "int64"}
    local p = io.popen("ls /work/shared/golden/deepfloyd-tiny/*/*.safetensors 2>/dev/null")
    local files = {}
    for l in p:lines() do files[#files + 1] = l end
    p:close()
    if #files == 0 then pending("no golden files here") return end
    for _, path in ipairs(files) do
      local s = readall(path)
      local h = s:sub(9, 8 + string.unpack("<I8", s))
      local t, meta = fio.load_safetensors(path)
      assert.is_table(meta)
      local n = 0
      for name, dt, shape in h:gmatch('"([^"]+)"%s*:%s*{%s*"dtype"%s*:%s*"([%w_]+)"%s*,%s*"shape"%s*:%s*%[([^%]]*)%]') do
        n = n + 1
        local g = t[name]
        assert.is_not_nil(g, path .. ": " .. name)
        assert.equal(map[dt], g.dtype, name)
        local want = {}
        for d in shape:gmatch("%d+") do want[#want + 1] = tonumber(d) end
        assert.is_true(same_shape(g, want), name)
      end
      local count = 0
      for _ in pairs(t) do count = count + 1 end
      assert.is_true(n > 0, path)
      assert.equal(n, count, path)
    end
  end)
end)

local function idx_bytes(code, fmt, dims, vals)
  local t = {string.char(0, 0, code, #dims)}
  for _, d in ipairs(dims) do t[#t + 1] = string.pack(">I4", d) end
  for _, v in ipairs(vals) do t[#t + 1] = string.pack(">" .. fmt, v) end
  return table.concat(t)
end

describe("fdm.io idx", function()
  local dir = tmpdir()
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("reads every IDX type", function()
    local cases = {
      {0x08, "B", "uint8", {0, 255, 7, 9, 1, 2}},
      {0x09, "b", "int64", {-128, 127, 0, 1, -1, 5}},
      {0x0B, "h", "int64", {-300, 300, 0, 1, -1, 5}},
      {0x0C, "i", "int64", {-(1 << 31), (1 << 31) - 1, 0, 1, -1, 5}},
      {0x0D, "f", "float32", {1.5, -2.25, 0, 1, -1, 5}},
      {0x0E, "d", "float32", {1.5, -2.25, 0, 1, -1, 5}},
    }
    for _, c in ipairs(cases) do
      local p = dir .. ("/t%02x.idx"):format(c[1])
      writeall(p, idx_bytes(c[1], c[2], {2, 3}, c[4]))
      local t = fio.read_idx(p)
      assert.equal(c[3], t.dtype)
      assert.is_true(same_shape(t, {2, 3}))
      assert.same({{c[4][1], c[4][2], c[4][3]}, {c[4][4], c[4][5], c[4][6]}}, t:tolist())
    end
  end)

  it("reads gzip'ed files (MNIST layout)", function()
    local vals = {}
    for i = 1, 3 * 28 * 28 do vals[i] = (i * 7) % 256 end
    local p = dir .. "/images-idx3-ubyte"
    writeall(p, idx_bytes(0x08, "B", {3, 28, 28}, vals))
    assert(os.execute("gzip -kf '" .. p .. "'"))
    local a, b = fio.read_idx(p), fio.read_idx(p .. ".gz")
    assert.is_true(same_shape(b, {3, 28, 28}))
    assert.equal(0, maxdiff(a, b))
    -- truncated gzip
    local z = readall(p .. ".gz")
    writeall(dir .. "/cut.gz", z:sub(1, #z - 10))
    raises(function() fio.read_idx(dir .. "/cut.gz") end, "read_idx", "cut.gz", "truncated")
    writeall(dir .. "/corrupt.gz", z:sub(1, 12) .. string.rep("\255", 40) .. z:sub(53))
    raises(function() fio.read_idx(dir .. "/corrupt.gz") end, "corrupt.gz")
  end)

  it("raises on corrupt and truncated files, naming the file", function()
    local p = dir .. "/bad.idx"
    local good = idx_bytes(0x08, "B", {2, 2}, {1, 2, 3, 4})
    local cases = {
      {"", "truncated"},
      {"\1\0\8\1" .. string.pack(">I4", 1) .. "x", "magic"},
      {"\0\0\7\1" .. string.pack(">I4", 1) .. "x", "type"},
      {"\0\0\8\0", "dimensions"},
      {"\0\0\8\20" .. string.rep("\0\0\0\1", 20) .. "x", "dimensions"},
      {good .. "x", "trailing"},
      {idx_bytes(0x0E, "B", {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {}), "too large"},
    }
    for _, c in ipairs(cases) do
      writeall(p, c[1])
      raises(function() fio.read_idx(p) end, "read_idx", "bad.idx", c[2])
    end
    for n = 0, #good - 1 do
      writeall(p, good:sub(1, n))
      raises(function() fio.read_idx(p) end, "bad.idx")
    end
    raises(function() fio.read_idx(dir .. "/none.idx") end, "none.idx")
  end)
end)

describe("fdm.io drawings", function()
  local dir = tmpdir()
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("save_grid lays out a [N,C,H,W] batch", function()
    local p = dir .. "/grid.png"
    fio.save_grid(p, fdm.rand(6, 3, 16, 16))   -- 3 per row, scale 4 -> 64 px cells, 4 px padding
    local r = fio.read_png(p)
    assert.is_true(same_shape(r, {3, 4 + 2 * 68, 4 + 3 * 68}))
    fio.save_grid(p, fdm.rand(5, 1, 28, 28), {nrow = 5, scale = 1})
    r = fio.read_png(p)
    assert.is_true(same_shape(r, {3, 4 + 32, 4 + 5 * 32}))
    -- background white, first cell holds the image (pm1 range: -1 -> black)
    fio.save_grid(p, fdm.full({2, 1, 8, 8}, -1), {range = "pm1", scale = 2})
    r = fio.read_png(p, {range = "byte"})
    local px = r:tolist()
    assert.equal(255, px[1][1][1])
    assert.equal(0, px[1][5][5])
  end)

  it("save_grid takes lists and captions", function()
    local p = dir .. "/cap.png"
    local list = {}
    for i = 1, 4 do list[i] = fdm.rand(i % 2 == 0 and 3 or 1, 20, 20) end
    fio.save_grid(p, list, {nrow = 2, row_captions = {"first row", "second"}, col_captions = {"a", "b"},
                            captions = {"1", "2", "3", "4"}, title = "A title"})
    local r = fio.read_png(p)
    assert.equal(3, r.shape[1])
    assert.is_true(r.shape[2] > 4 + 2 * 64 + 30 and r.shape[3] > 4 + 2 * 64 + 30)
    raises(function() fio.save_grid(p, {fdm.rand(2, 4, 4)}) end, "save_grid", "image 1")
    raises(function() fio.save_grid(p, {}) end, "no images")
    raises(function() fio.save_grid(p, fdm.rand(4, 4)) end, "save_grid")
  end)

  it("save_grid never clips: long captions and a long title on a narrow grid fit, whole", function()
    local p = dir .. "/long.png"
    local caps = { '"the digit nine" (9)', "t = 250 (abar 0.846)",
                   "a caption of many words that cannot fit under one small image at all",
                   "Supercalifragilisticexpialidocious-without-any-spaces-so-it-must-break-inside" }
    local title = "1.2.3: the pure-noise denoiser outputs the training set's mean image, whatever the noise"
    local rows = { "a row caption that is longer than any sensible left margin could hold on one line", "r2" }
    local lay = fio.save_grid(p, fdm.rand(4, 1, 28, 28), { nrow = 2, scale = 1, captions = caps, title = title,
      row_captions = rows, col_captions = { "first column, with a long caption", "2" } })
    local img = fio.read_png(p, { range = "byte" })
    assert.are.same({ 3, lay.height, lay.width }, { img.shape[1], img.shape[2], img.shape[3] })
    -- every line inside the canvas, clear of every other line and of the images
    local boxes = {}
    for _, t in ipairs(lay.texts) do
      assert.is_true(t.x >= 1 and t.y >= 1 and t.x + t.w <= lay.width - 1 and t.y + t.h <= lay.height - 1,
        ("%s %d '%s' at %.1f,%.1f %.1fx%.1f outside %dx%d"):format(t.kind, t.index, t.text, t.x, t.y, t.w, t.h,
          lay.width, lay.height))
      boxes[#boxes + 1] = { t.x, t.y, t.w, t.h, t.kind .. " '" .. t.text .. "'" }
    end
    for i, c in ipairs(lay.cells) do boxes[#boxes + 1] = { c[1], c[2], c[3], c[4], "image " .. i } end
    for i = 1, #boxes do
      for j = i + 1, #boxes do
        local a, b = boxes[i], boxes[j]
        local apart = a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1] or a[2] + a[4] <= b[2] or b[2] + b[4] <= a[2]
        assert.is_true(apart, a[5] .. " overlaps " .. b[5])
      end
    end
    -- each text drawn whole: its lines give back every word (or, unbroken, every character)
    local function lines_of(kind, index)
      local l = {}
      for _, t in ipairs(lay.texts) do if t.kind == kind and t.index == index then l[#l + 1] = t.text end end
      return l
    end
    for i, c in ipairs(caps) do
      local l = lines_of("caption", i)
      assert.is_true(#l >= 1, "caption " .. i .. " not drawn")
      if c:find(" ") then assert.are.equal(c, table.concat(l, " ")) else assert.are.equal(c, table.concat(l)) end
    end
    assert.is_true(#lines_of("caption", 4) >= 2)   -- the unbroken word was broken, not cut
    assert.are.equal(title, table.concat(lines_of("title", 1), " "))
    assert.are.equal(rows[1], table.concat(lines_of("row", 1), " "))
    assert.are.equal("first column, with a long caption", table.concat(lines_of("col", 1), " "))
    -- the pixels agree: ink inside every line's box, none on the canvas border
    local px = img:narrow(1, 1, 1):reshape(lay.height, lay.width):float()
    for _, t in ipairs(lay.texts) do
      local x0, y0 = math.floor(t.x) + 1, math.floor(t.y) + 1
      local w, h = math.min(math.ceil(t.w) + 1, lay.width - x0 + 1), math.min(math.ceil(t.h) + 1, lay.height - y0 + 1)
      assert.is_true(px:narrow(1, y0, h):narrow(2, x0, w):min():item() < 128, "no ink for '" .. t.text .. "'")
    end
    for _, edge in ipairs({ px:narrow(1, 1, 1), px:narrow(1, lay.height, 1), px:narrow(2, 1, 1), px:narrow(2, lay.width, 1) }) do
      assert.is_true(edge:min():item() >= 250, "ink on the canvas border")
    end
    -- a title wider than the grid widens the canvas (up to a limit, then wraps)
    local narrow = fio.save_grid(p, fdm.rand(1, 1, 28, 28), { scale = 1, title = "a title much wider than 28 px" })
    assert.is_true(narrow.width > 28 + 8)
    assert.are.equal(1, #narrow.texts)
  end)

  it("write_gif writes an animated GIF", function()
    local p = dir .. "/a.gif"
    fio.write_gif(p, fdm.rand(5, 3, 8, 8), {delay_ms = 100, scale = 2})
    local s = readall(p)
    assert.equal("GIF89a", s:sub(1, 6))
    assert.equal(16, string.unpack("<I2", s, 7))
    assert.is_truthy(s:find("NETSCAPE2.0", 1, true))
    local frames = 0
    for _ in s:gmatch("\33\249\4") do frames = frames + 1 end
    assert.equal(5, frames)
    fio.write_gif(dir .. "/g.gif", {fdm.rand(1, 10, 10), fdm.rand(1, 10, 10)}, {range = "pm1"})
    assert.equal("GIF89a", readall(dir .. "/g.gif"):sub(1, 6))
    raises(function() fio.write_gif(p, {fdm.rand(1, 4, 4), fdm.rand(1, 5, 4)}) end, "write_gif", "frame 2")
    no_temporaries(dir)
  end)

  it("plot_curves draws loss curves", function()
    local p = dir .. "/plot.png"
    local y1, y2, x = {}, {}, {}
    for i = 1, 100 do y1[i] = 1 / i; y2[i] = 0.5 * math.exp(-i / 20) + 1e-3; x[i] = i * 10 end
    y2[10] = 0 / 0
    fio.plot_curves(p, {{name = "train", y = y1, x = x}, {name = "val", y = y2}}, {title = "loss", xlabel = "step"})
    local r = fio.read_png(p)
    assert.is_true(same_shape(r, {3, 500, 800}))
    assert.is_true(r:min():item() < 0.5)    -- something was drawn
    fio.plot_curves(p, {{y = {1, 2, 3}}}, {logy = false, width = 320, height = 240})
    assert.is_true(same_shape(fio.read_png(p), {3, 240, 320}))
    raises(function() fio.plot_curves(p, {{name = "a"}}) end, "no y")
    raises(function() fio.plot_curves(p, {{y = {1, 2}, x = {1}}}) end, "x values")
    raises(function() fio.plot_curves(p, {{y = {1, "z"}}}) end, "not a number")
  end)
end)
