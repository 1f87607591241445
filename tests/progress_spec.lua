-- tests for fdm.progress: tqdm-style meter text, terminal redraws, plain lines
local fdm = require "fdm"
local progress = fdm.progress

-- a fake clock and an output file whose text we read back
local function harness()
  local h = { t = 0 }
  h.clock = function() return h.t end
  h.out = io.tmpfile()
  h.text = function()
    h.out:seek("set", 0)
    return h.out:read("a")
  end
  return h
end

describe("progress.format_meter", function()
  it("formats like tqdm", function()
    assert.are.equal("epoch 1:  42%|████▏     | 420/1000 [00:12<00:16, 35.00it/s, loss=0.0312]",
      progress.format_meter(420, 1000, 12, { desc = "epoch 1", postfix = "loss=0.0312" }))
    assert.are.equal("  0%|          | 0/10 [00:00<?, ?it/s]", progress.format_meter(0, 10, 0))
    assert.are.equal("100%|##########| 10/10 [01:40<00:00, 10.00s/it]",
      progress.format_meter(10, 10, 100, { ascii = true }))
    assert.are.equal("x: 420it [1:02:05, 34.50it/s]",
      progress.format_meter(420, nil, 3725, { desc = "x", rate = 34.5 }))
  end)

  it("sizes the bar to ncols", function()
    local s = progress.format_meter(5, 10, 1, { ncols = 60 })
    assert.are.equal(60, utf8.len(s))
  end)

  it("formats numbers and intervals like tqdm", function()
    assert.are.equal("0.0312", progress.format_num(0.0312))
    assert.are.equal("0.0312", progress.format_num(0.031234567))
    assert.are.equal("1.23e+5", progress.format_num(123456.7))
    assert.are.equal("1.5e-7", progress.format_num(1.5e-7))
    assert.are.equal("7", progress.format_num(7))
    assert.are.equal("2", progress.format_num(2.0))
    assert.are.equal("00:59", progress.format_interval(59.9))
    assert.are.equal("1:00:00", progress.format_interval(3600))
    assert.are.equal("acc=0.9, loss=0.5", progress.postfix_str({ loss = 0.5, acc = 0.9 }))
    assert.are.equal("loss=0.5, acc=0.9", progress.postfix_str({ { "loss", 0.5 }, { "acc", 0.9 } }))
  end)
end)

describe("progress.bar on a terminal", function()
  it("redraws with \\r at most every mininterval and ends with a newline", function()
    local h = harness()
    local bar = progress.bar { total = 1000, desc = "epoch 1", out = h.out, tty = true, clock = h.clock }
    for _ = 1, 1000 do
      h.t = h.t + 0.001   -- 1000 it/s: 1 s in all, so about 10 redraws
      bar:update(1, { loss = 0.0312 })
    end
    bar:close()
    local s = h.text()
    local draws = select(2, s:gsub("\r", ""))
    assert.is_true(draws >= 9 and draws <= 13, "redraws: " .. draws)
    assert.are.equal("\n", s:sub(-1))
    local last = s:match("\r([^\r]*)\n$")
    assert.are.equal("epoch 1: 100%|██████████| 1000/1000 [00:01<00:00, 1000.00it/s, loss=0.0312]", last)
  end)

  it("pads over a longer previous line", function()
    local h = harness()
    local bar = progress.bar { total = 2, out = h.out, tty = true, clock = h.clock }
    bar:set_postfix({ loss = 123.456 }, true)
    bar:set_postfix({ loss = 1 }, true)
    bar:close()
    local lines = {}
    for l in h.text():gmatch("\r([^\r\n]*)") do lines[#lines + 1] = l end
    assert.are.equal(utf8.len(lines[2]), utf8.len(lines[3]))
  end)
end)

describe("progress.bar in a log (not a terminal)", function()
  it("prints a line every 10% and a final line", function()
    local h = harness()
    local bar = progress.bar { total = 100, desc = "train", out = h.out, tty = false, clock = h.clock }
    for _ = 1, 100 do h.t = h.t + 0.5; bar:update() end
    bar:close()
    local lines = {}
    for l in h.text():gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    assert.are.equal(11, #lines)
    assert.is_nil(h.text():find("\r"))
    assert.are.equal("train:   1%|1         | 1/100 [00:00<00:49,  2.00it/s]", lines[1])
    assert.are.equal("train:  10%|#         | 10/100 [00:05<00:45,  2.00it/s]", lines[2])
    assert.are.equal("train: 100%|##########| 100/100 [00:50<00:00,  2.00it/s]", lines[11])
  end)

  it("also prints every line_interval seconds", function()
    local h = harness()
    local bar = progress.bar { total = 1000, out = h.out, tty = false, clock = h.clock, line_interval = 5 }
    for _ = 1, 50 do h.t = h.t + 1; bar:update() end   -- 5% in 50 s
    local n = select(2, h.text():gsub("\n", ""))
    assert.is_true(n >= 10 and n <= 11, "lines: " .. n)
  end)

  it("defaults to plain lines for a file handle", function()
    local h = harness()
    local bar = progress.bar { total = 3, out = h.out, clock = h.clock }
    bar:update(3)
    bar:close()
    assert.is_nil(h.text():find("\r"))
  end)
end)

describe("progress.iter", function()
  it("wraps a count and a list, closing on break", function()
    local h = harness()
    local seen = {}
    for i in progress.iter(5, { out = h.out, clock = h.clock }) do seen[#seen + 1] = i end
    assert.are.same({ 1, 2, 3, 4, 5 }, seen)
    assert.matches("5/5", h.text())
    local h2 = harness()
    local vals = {}
    for i, v in progress.iter({ "a", "b", "c" }, { out = h2.out, clock = h2.clock, tty = true }) do
      vals[i] = v
      if i == 2 then break end
    end
    assert.are.same({ "a", "b" }, vals)
    assert.are.equal("\n", h2.text():sub(-1))   -- the bar was closed
  end)
end)
