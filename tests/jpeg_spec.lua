-- tests of fdm.io.read_jpeg and fdm.io.read_image. The JPEG files in
-- tests/data/jpeg were made once with cjpeg (libjpeg-turbo-progs) and the
-- .ppm/.pgm next to them are djpeg's decoding: libjpeg's default decoder
-- settings are ours, so the pixels must match exactly.
local fdm = require "fdm"
local H = require "helpers"
local raises = H.raises
local fio = fdm.io

local DIR = H.here("data/jpeg")

-- a binary PPM (P6) or PGM (P5) -> width, height, channels, bytes
local function read_pnm(path)
  local s = H.readall(path)
  local magic, w, h, maxv, rest = s:match("^(P[56])%s+(%d+)%s+(%d+)%s+(%d+)%s(.*)$")
  assert(magic and tonumber(maxv) == 255, "not an 8-bit binary PNM: " .. path)
  return tonumber(w), tonumber(h), magic == "P6" and 3 or 1, rest
end

-- the [C,H,W] uint8 tensor's bytes in interleaved (H,W,C) order
local function interleaved(t)
  local C, Hh, W = t.shape[1], t.shape[2], t.shape[3]
  local v = H.flat(t)
  local out = {}
  for y = 0, Hh - 1 do
    for x = 0, W - 1 do
      for c = 0, C - 1 do out[#out + 1] = string.char(v[c * Hh * W + y * W + x + 1]) end
    end
  end
  return table.concat(out)
end

describe("fdm.io.read_jpeg", function()
  for _, case in ipairs({ { "rgb.jpg", "rgb.ppm" }, { "rgb_progressive.jpg", "rgb_progressive.ppm" },
                          { "gray.jpg", "gray.pgm" } }) do
    it(case[1] .. " decodes to djpeg's pixels exactly", function()
      local w, h, c, bytes = read_pnm(DIR .. "/" .. case[2])
      local t = fio.read_jpeg(DIR .. "/" .. case[1], { range = "byte" })
      assert.are.equal("uint8", t.dtype)
      assert.are.same({ c, h, w }, t.shape)
      assert.are.equal(bytes, interleaved(t))
    end)
  end
  it("ranges 01 and pm1 are the bytes scaled", function()
    local b = fio.read_jpeg(DIR .. "/rgb.jpg", { range = "byte" }):float()
    local f = fio.read_jpeg(DIR .. "/rgb.jpg")
    assert.are.equal("float32", f.dtype)
    assert.is_true((f - b / 255):abs():max():item() <= 1e-6)
    local p = fio.read_jpeg(DIR .. "/rgb.jpg", { range = "pm1" })
    assert.is_true((p - (b * (2 / 255) - 1)):abs():max():item() <= 1e-6)
  end)
  it("a truncated file is an error naming the file, not gray rows", function()
    local s = H.readall(DIR .. "/rgb.jpg")
    local d = H.tmpdir()
    for _, n in ipairs({ 2, 40, #s // 2, #s - 10 }) do
      local p = d .. "/trunc" .. n .. ".jpg"
      H.writeall(p, s:sub(1, n))
      raises(function() fio.read_jpeg(p) end, "read_jpeg", "trunc" .. n .. ".jpg")
    end
    local p = d .. "/half.jpg"
    H.writeall(p, s:sub(1, #s // 2))
    raises(function() fio.read_jpeg(p) end, "corrupt JPEG")
    os.execute("rm -rf '" .. d .. "'")
  end)
  it("a corrupt header is an error naming the file and the problem", function()
    local s = H.readall(DIR .. "/rgb.jpg")
    local d = H.tmpdir()
    -- the SOF0 marker's frame header: precision 8 -> 3 (unsupported)
    local sof = s:find("\255\192", 1, true)
    assert(sof, "no SOF0 marker")
    local p = d .. "/badsof.jpg"
    H.writeall(p, s:sub(1, sof + 3) .. "\3" .. s:sub(sof + 5))
    raises(function() fio.read_jpeg(p) end, "read_jpeg", "badsof.jpg", "corrupt JPEG")
    -- a file that is not a JPEG at all
    p = d .. "/junk.jpg"
    H.writeall(p, "this is not an image at all")
    raises(function() fio.read_jpeg(p) end, "junk.jpg", "not a JPEG")
    raises(function() fio.read_jpeg(d .. "/missing.jpg") end, "read_jpeg", "missing.jpg")
    os.execute("rm -rf '" .. d .. "'")
  end)
  it("a bad range is an error", function()
    raises(function() fio.read_jpeg(DIR .. "/rgb.jpg", { range = "x" }) end, "read_jpeg", "range")
  end)
end)

describe("fdm.io.read_image", function()
  it("picks the decoder by magic bytes: a PNG named .jpg and a JPEG named .png", function()
    local d = H.tmpdir()
    local t = fdm.rand(3, 9, 7)
    fio.write_png(d .. "/really_png.jpg", t)
    local a = fio.read_image(d .. "/really_png.jpg", { range = "byte" })
    local b = fio.read_png(d .. "/really_png.jpg", { range = "byte" })
    assert.are.equal(0, (a:float() - b:float()):abs():max():item())
    H.writeall(d .. "/really_jpeg.png", H.readall(DIR .. "/gray.jpg"))
    local g = fio.read_image(d .. "/really_jpeg.png", { range = "byte" })
    local _, _, _, bytes = read_pnm(DIR .. "/gray.pgm")
    assert.are.equal(bytes, interleaved(g))
    os.execute("rm -rf '" .. d .. "'")
  end)
  it("anything else is an error naming the file", function()
    local d = H.tmpdir()
    H.writeall(d .. "/pic.gif", "GIF89a\1\0\1\0\0\0\0;")
    raises(function() fio.read_image(d .. "/pic.gif") end, "read_image", "pic.gif", "not a PNG or JPEG")
    H.writeall(d .. "/empty.png", "")
    raises(function() fio.read_image(d .. "/empty.png") end, "read_image", "empty.png")
    os.execute("rm -rf '" .. d .. "'")
  end)
end)
