-- fdm.deepfloyd.tokenizer: the slow T5Tokenizer of transformers 4.33.3
-- (legacy = true) over a SentencePiece unigram model, in plain Lua: it reads
-- spiece.model (protobuf), normalises as sentencepiece 0.1.97 does (the
-- model's precompiled nmt_nfkc character map, a darts-clone double array;
-- extra whitespace removed, a dummy prefix, spaces as U+2581) and segments
-- with the unigram Viterbi search (unknown characters: min score - 10).
--
--   local Tok = require "fdm.deepfloyd.tokenizer"
--   local tok = Tok.load(dir)                       -- DIR/spiece.model (+ tokenizer_config.json)
--   local ids, mask, tokens, n = tok:encode(prompt, {max_length = 77})
--       ids/mask: Lua lists of max_length integers (</s> appended, also after
--       truncation; right padding with the pad id); n: the untruncated length
--   tok:segment(text) -> the sentencepiece pieces of one text (no special tokens)
--   Tok.preprocess(prompt) -> prompt:lower():strip() as IFPipeline does it
local L = require "fdm.deepfloyd.loader"

local Tok = {}
Tok.__index = Tok

---------------------------------------------------------------- protobuf
local CORRUPT = "tokenizer: spiece.model is truncated or corrupt (%s)"

-- a varint within s[..limit]
local function varint(s, pos, limit)
  local v, shift = 0, 0
  while true do
    local b = pos <= limit and s:byte(pos)
    if not b then error(CORRUPT:format("a number runs past the end of its message"), 0) end
    if shift > 63 then error(CORRUPT:format("a number of more than 64 bits"), 0) end
    pos = pos + 1
    v = v | ((b & 0x7f) << shift)
    if b < 0x80 then return v, pos end
    shift = shift + 7
  end
end

-- calls fn(field, wire, value, pos) for each field of the message s[i..j];
-- a field that runs past j (a cut file) is an error, not a shorter field
local function fields(s, i, j, fn)
  local pos = i
  local function need(n)
    if n < 0 or pos + n - 1 > j then error(CORRUPT:format("a field runs past the end of its message"), 0) end
  end
  while pos <= j do
    local key
    key, pos = varint(s, pos, j)
    local field, wire = key >> 3, key & 7
    if wire == 0 then
      local v
      v, pos = varint(s, pos, j)
      fn(field, wire, v)
    elseif wire == 1 then
      need(8)
      fn(field, wire, s:sub(pos, pos + 7)); pos = pos + 8
    elseif wire == 2 then
      local len
      len, pos = varint(s, pos, j)
      need(len)
      fn(field, wire, nil, pos, pos + len - 1)
      pos = pos + len
    elseif wire == 5 then
      need(4)
      fn(field, wire, s:sub(pos, pos + 3)); pos = pos + 4
    else
      error("tokenizer: unsupported protobuf wire type " .. wire .. " in spiece.model", 0)
    end
  end
end

local NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

function Tok.parse_model(s)
  local m = { pieces = {}, normalizer = { add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true },
    trainer = {} }
  fields(s, 1, #s, function(f, w, v, a, b)
    if f == 1 and w == 2 then
      local p = { type = NORMAL, score = 0.0 }
      fields(s, a, b, function(f2, w2, v2, a2, b2)
        if f2 == 1 and w2 == 2 then p.piece = s:sub(a2, b2)
        elseif f2 == 2 and w2 == 5 then p.score = (string.unpack("<f", v2))
        elseif f2 == 3 and w2 == 0 then p.type = v2 end
      end)
      m.pieces[#m.pieces + 1] = p
    elseif f == 2 and w == 2 then
      m.has_trainer = true
      fields(s, a, b, function(f2, w2, v2)
        if w2 == 0 then
          if f2 == 3 then m.trainer.model_type = v2
          elseif f2 == 35 then m.trainer.byte_fallback = v2 ~= 0
          elseif f2 == 40 then m.trainer.unk_id = v2 end
        end
      end)
    elseif f == 3 and w == 2 then
      m.has_normalizer = true
      local n = m.normalizer
      fields(s, a, b, function(f2, w2, v2, a2, b2)
        if f2 == 1 and w2 == 2 then n.name = s:sub(a2, b2)
        elseif f2 == 2 and w2 == 2 then n.charsmap = s:sub(a2, b2)
        elseif f2 == 3 and w2 == 0 then n.add_dummy_prefix = v2 ~= 0
        elseif f2 == 4 and w2 == 0 then n.remove_extra_whitespaces = v2 ~= 0
        elseif f2 == 5 and w2 == 0 then n.escape_whitespaces = v2 ~= 0 end
      end)
    end
  end)
  if #m.pieces == 0 then error("tokenizer: spiece.model holds no pieces", 0) end
  -- sentencepiece writes the pieces, then its trainer and normalizer specs: a
  -- file cut between two pieces parses, but has neither
  if not m.has_trainer or not m.has_normalizer then
    error(CORRUPT:format(("%d pieces, then no %s spec"):format(#m.pieces, m.has_trainer and "normalizer" or "trainer")), 0)
  end
  if m.trainer.model_type and m.trainer.model_type ~= 1 then
    error(("tokenizer: spiece.model is not a unigram model (model_type %d)"):format(m.trainer.model_type), 0)
  end
  return m
end

---------------------------------------------------------------- normaliser
-- the precompiled character map: uint32 trie size, darts-clone units, strings
local function charsmap(blob)
  if not blob or #blob < 4 then return nil end
  local tsize = string.unpack("<I4", blob, 1)
  local n = tsize // 4
  local units = {}
  for i = 0, n - 1 do units[i] = string.unpack("<I4", blob, 5 + 4 * i) end
  local strings = blob:sub(5 + tsize)
  local function offset(u) return (u >> 10) << ((u & (1 << 9)) >> 6) end
  -- longest prefix of s at pos: length, replacement
  return function(s, pos)
    local node = 0
    local u = units[0]
    node = node ~ offset(u)
    local best_len, best_val = 0, nil
    local i = pos
    while i <= #s do
      local c = s:byte(i)
      node = node ~ c
      u = units[node]
      if u == nil or (u & ((1 << 31) | 0xFF)) ~= c then break end
      node = node ~ offset(u)
      if (u >> 8) & 1 == 1 then
        best_len, best_val = i - pos + 1, units[node] & ((1 << 31) - 1)
      end
      i = i + 1
    end
    if best_len == 0 then return 0 end
    local e = strings:find("\0", best_val + 1, true) or (#strings + 1)
    return best_len, strings:sub(best_val + 1, e - 1)
  end
end

-- one UTF-8 character at pos: its length (nil when malformed)
local function utf8_len(s, pos)
  local c = s:byte(pos)
  local n
  if c < 0x80 then return 1
  elseif c >= 0xC2 and c <= 0xDF then n = 2
  elseif c >= 0xE0 and c <= 0xEF then n = 3
  elseif c >= 0xF0 and c <= 0xF4 then n = 4
  else return nil end
  if pos + n - 1 > #s then return nil end
  for k = 1, n - 1 do
    local b = s:byte(pos + k)
    if b < 0x80 or b > 0xBF then return nil end
  end
  return n
end

local SPACE = "\u{2581}"

function Tok:normalize_prefix(s, pos)
  if self.map then
    local len, rep = self.map(s, pos)
    if len > 0 then return rep, len end
  end
  local n = utf8_len(s, pos)
  if not n then return "\u{FFFD}", 1 end
  return s:sub(pos, pos + n - 1), n
end

function Tok:normalize(s)
  local ns = self.norm
  local pos = 1
  if ns.remove_extra_whitespaces then
    while pos <= #s do
      local r, n = self:normalize_prefix(s, pos)
      if r ~= " " then break end
      pos = pos + n
    end
  end
  if pos > #s then return "" end
  local out = {}
  local ws = ns.escape_whitespaces and SPACE or " "
  if ns.add_dummy_prefix then out[#out + 1] = ws end
  local prev_space = ns.remove_extra_whitespaces
  while pos <= #s do
    local r, n = self:normalize_prefix(s, pos)
    if prev_space then r = r:gsub("^ +", "") end
    if #r > 0 then
      out[#out + 1] = ns.escape_whitespaces and r:gsub(" ", SPACE) or r
      prev_space = r:sub(-1) == " "
    end
    pos = pos + n
    if not ns.remove_extra_whitespaces then prev_space = false end
  end
  local str = table.concat(out)
  if ns.remove_extra_whitespaces then
    while #str >= #ws and str:sub(-#ws) == ws do str = str:sub(1, -#ws - 1) end
  end
  return str
end

---------------------------------------------------------------- unigram
local f32 = function(x) return (string.unpack("<f", string.pack("<f", x))) end

-- the sentencepiece pieces (strings) and ids of text
function Tok:segment(text)
  local s = self:normalize(text)
  local n = #s
  if n == 0 then return {}, {} end
  -- best[i]: best path ending at byte i (0 = start)
  local score, from, id = { [0] = 0.0 }, {}, {}
  local pos = 1
  while pos <= n do
    local start = pos - 1
    local base = score[start]
    local clen = utf8_len(s, pos) or 1
    if base ~= nil then
      local has_single = false
      local e = pos
      local maxe = math.min(n, pos + self.max_len - 1)
      while e <= maxe do
        local pid = self.vocab[s:sub(pos, e)]
        if pid then
          local p = self.pieces[pid + 1]
          local sc = p.type == USER_DEFINED and (f32((e - pos + 1) * self.max_score - 0.1)) or p.score
          local cand = f32(base + sc)
          if score[e] == nil or cand > score[e] then score[e], from[e], id[e] = cand, start, pid end
          if e - pos + 1 == clen then has_single = true end
        end
        e = e + 1
      end
      if not has_single then
        local e2 = pos + clen - 1
        local cand = f32(base + self.unk_score)
        if score[e2] == nil or cand > score[e2] then score[e2], from[e2], id[e2] = cand, start, self.unk_id end
      end
    end
    pos = pos + clen
  end
  local toks, ids = {}, {}
  local e = n
  while e > 0 do
    local st = from[e]
    if id[e] == self.unk_id and ids[1] == self.unk_id then
      toks[1] = s:sub(st + 1, e) .. toks[1] -- a run of unknown characters is one piece
    else
      table.insert(toks, 1, s:sub(st + 1, e))
      table.insert(ids, 1, id[e])
    end
    e = st
  end
  return toks, ids
end

---------------------------------------------------------------- T5Tokenizer
function Tok.new(model, cfg)
  local self = setmetatable({}, Tok)
  self.pieces = model.pieces
  self.norm = model.normalizer
  self.map = charsmap(model.normalizer.charsmap)
  self.vocab = {}
  self.max_len = 1
  local min_score, max_score = math.huge, -math.huge
  for i, p in ipairs(self.pieces) do
    local id = i - 1
    if p.type == UNKNOWN and self.unk_id == nil then self.unk_id = id end
    if p.type == NORMAL or p.type == USER_DEFINED then
      self.vocab[p.piece] = id
      if #p.piece > self.max_len then self.max_len = #p.piece end
    end
    if p.type == NORMAL then
      min_score = math.min(min_score, p.score)
      max_score = math.max(max_score, p.score)
    end
  end
  self.unk_id = model.trainer.unk_id or self.unk_id or 0
  self.unk_score = f32(min_score - 10.0)
  self.max_score = max_score
  self.piece_id = {}
  for i, p in ipairs(self.pieces) do self.piece_id[p.piece] = i - 1 end
  cfg = cfg or {}
  local extra = type(cfg.extra_ids) == "number" and cfg.extra_ids or 100
  self.extra_ids = extra
  self.vocab_size = #self.pieces + extra
  local function tokstr(v, def)
    if type(v) == "table" then v = v.content end
    if type(v) == "string" then return v end
    return def
  end
  self.eos_token = tokstr(cfg.eos_token, "</s>")
  self.unk_token = tokstr(cfg.unk_token, "<unk>")
  self.pad_token = tokstr(cfg.pad_token, "<pad>")
  -- special tokens that are split out of the text (transformers' added tokens)
  self.special = {}
  local function special(tk, tid) if tk then self.special[tk] = tid end end
  special(self.eos_token, self.piece_id[self.eos_token] or self.unk_id)
  special(self.unk_token, self.piece_id[self.unk_token] or self.unk_id)
  -- a model without a <pad> piece (the tiny test model) gets it appended after the extra ids
  self.pad_id = self.piece_id[self.pad_token] or self.vocab_size
  special(self.pad_token, self.pad_id)
  for k = 0, extra - 1 do special(("<extra_id_%d>"):format(k), self.vocab_size - k - 1) end
  self.eos_id = self.special[self.eos_token]
  self.special_first = {}
  for tk in pairs(self.special) do
    local c = tk:sub(1, 1)
    self.special_first[c] = true
  end
  return self
end

function Tok.load(dir)
  local path = dir .. "/spiece.model"
  local s = L.read_file(path)
  if not s then error(("tokenizer: missing file '%s' (the SentencePiece model of T5)"):format(path), 0) end
  local model = Tok.parse_model(s)
  local cfg = {}
  if L.exists(dir .. "/tokenizer_config.json") then cfg = L.read_json(dir .. "/tokenizer_config.json", "tokenizer") end
  if L.exists(dir .. "/special_tokens_map.json") then
    local sm = L.read_json(dir .. "/special_tokens_map.json", "tokenizer")
    for k, v in pairs(sm) do if cfg[k] == nil then cfg[k] = v end end
  end
  local t = Tok.new(model, cfg)
  t.dir = dir
  return t
end

-- splits text around special-token literals: list of {text =} / {special = id, token =}
function Tok:split_special(text)
  local parts, buf = {}, 1
  local pos = 1
  while pos <= #text do
    local found
    if text:sub(pos, pos) == "<" then
      local e = text:find(">", pos, true)
      if e then
        local cand = text:sub(pos, e)
        if self.special[cand] then found = cand end
      end
    end
    if found then
      if pos > buf then parts[#parts + 1] = { text = text:sub(buf, pos - 1) } end
      parts[#parts + 1] = { special = self.special[found], token = found }
      pos = pos + #found
      buf = pos
    else
      pos = pos + 1
    end
  end
  if buf <= #text then parts[#parts + 1] = { text = text:sub(buf) } end
  -- added tokens strip the whitespace beside them
  for i, p in ipairs(parts) do
    if p.special then
      if parts[i - 1] and parts[i - 1].text then parts[i - 1].text = parts[i - 1].text:gsub("%s+$", "") end
      if parts[i + 1] and parts[i + 1].text then parts[i + 1].text = parts[i + 1].text:gsub("^%s+", "") end
    end
  end
  return parts
end

function Tok:tokenize(text)
  local toks, ids = {}, {}
  for _, p in ipairs(self:split_special(text)) do
    if p.special then
      toks[#toks + 1], ids[#ids + 1] = p.token, p.special
    elseif #p.text > 0 then
      local t, i = self:segment(p.text)
      for k = 1, #t do
        toks[#toks + 1] = i[k] == self.unk_id and self.unk_token or t[k]
        ids[#ids + 1] = i[k]
      end
    end
  end
  return toks, ids
end

function Tok:encode(text, opts)
  opts = opts or {}
  local max = opts.max_length or 77
  local toks, ids = self:tokenize(text)
  local n = #ids + 1
  if #ids > max - 1 then
    for k = #ids, max, -1 do ids[k] = nil; toks[k] = nil end
  end
  ids[#ids + 1] = self.eos_id
  toks[#toks + 1] = self.eos_token
  local mask = {}
  for k = 1, #ids do mask[k] = 1 end
  if opts.padding ~= false then
    for k = #ids + 1, max do ids[k] = self.pad_id; mask[k] = 0 end
  end
  return ids, mask, toks, n
end

---------------------------------------------------------------- IFPipeline's text preprocessing
-- prompt.lower().strip() for the characters prompts use: ASCII, Latin-1,
-- Latin Extended-A, Greek, Cyrillic, full-width Latin
local function lower_cp(c)
  if c >= 0x41 and c <= 0x5A then return c + 32 end
  if c < 0xC0 then return c end
  if (c >= 0xC0 and c <= 0xDE and c ~= 0xD7) then return c + 32 end
  if c >= 0x100 and c <= 0x17F and c ~= 0x130 and c ~= 0x138 and c ~= 0x149 and c ~= 0x178 and c ~= 0x17F then
    if (c >= 0x139 and c <= 0x148) or (c >= 0x179 and c <= 0x17E) then
      if c % 2 == 1 then return c + 1 end
      return c
    end
    if c % 2 == 0 then return c + 1 end
    return c
  end
  if c == 0x178 then return 0xFF end
  if c >= 0x391 and c <= 0x3AB and c ~= 0x3A2 then return c + 32 end
  if c >= 0x410 and c <= 0x42F then return c + 32 end
  if c >= 0x400 and c <= 0x40F then return c + 80 end
  if c >= 0xFF21 and c <= 0xFF3A then return c + 32 end
  return c
end

local SPACES = { [0x09] = true, [0x0A] = true, [0x0B] = true, [0x0C] = true, [0x0D] = true, [0x20] = true,
  [0x1C] = true, [0x1D] = true, [0x1E] = true, [0x1F] = true, [0x85] = true, [0xA0] = true, [0x1680] = true,
  [0x2028] = true, [0x2029] = true, [0x202F] = true, [0x205F] = true, [0x3000] = true }
for c = 0x2000, 0x200A do SPACES[c] = true end

function Tok.preprocess(prompt)
  local ok, cps = pcall(function()
    local l = {}
    for _, c in utf8.codes(prompt) do l[#l + 1] = c end
    return l
  end)
  if not ok then return (prompt:lower():gsub("^%s+", ""):gsub("%s+$", "")) end
  local i, j = 1, #cps
  while i <= j and SPACES[cps[i]] do i = i + 1 end
  while j >= i and SPACES[cps[j]] do j = j - 1 end
  local out = {}
  for k = i, j do out[#out + 1] = utf8.char(lower_cp(cps[k])) end
  return table.concat(out)
end

return Tok
