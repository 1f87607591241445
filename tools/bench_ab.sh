#!/usr/bin/env bash
# tools/bench_ab.sh OLD_TREE NEW_TREE [ROUNDS]: fdm's `make bench` numbers of
# two builds, interleaved (old, new, old, new, ...) so that both see the same
# machine, and the median of each over ROUNDS (default 3). Each tree must be
# built (make); PyTorch and the dispatch-overhead measurement are skipped, and
# each run is one repeat (BENCH_REPEATS=1: the rounds are the repeats).
# Prints one table: config, mode, old img/s, new img/s, new/old.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); rounds=${3:-3}
out=$(mktemp -d)
run() {   # tree label round
  (cd "$1" && BENCH_TORCH=0 BENCH_OVERHEAD=0 BENCH_REPEATS=1 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive \
     LUA_PATH="$1/lua/?.lua;$1/lua/?/init.lua;;" LUA_CPATH="$1/build/lua/?.so;;" \
     ./build/fdm bench/bench.lua) > "$out/$2.$3" 2>&1
}
echo "bench_ab: $rounds rounds, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do run "$old" old "$r"; run "$new" new "$r"; echo "round $r done (load $(cut -d' ' -f1 /proc/loadavg))"; done
# rows "config mode fdm_img/s ..." of each run's table
lua5.4 - "$out" "$rounds" <<'LUA'
local dir, rounds = arg[1], tonumber(arg[2])
local function rows(file)
  local t = {}
  for line in io.lines(file) do
    local cfg, mode, v = line:match("^(%S+_D%d+_B%d+)%s+(%a+)%s+([%d.]+)")
    if cfg then t[cfg .. " " .. mode] = tonumber(v) end
  end
  return t
end
local function median(xs) table.sort(xs); return xs[(#xs + 1) // 2] end
local keys, vals = {}, { old = {}, new = {} }
for r = 1, rounds do
  for _, which in ipairs({ "old", "new" }) do
    for k, v in pairs(rows(dir .. "/" .. which .. "." .. r)) do
      vals[which][k] = vals[which][k] or {}
      table.insert(vals[which][k], v)
      if which == "old" and r == 1 then keys[#keys + 1] = k end
    end
  end
end
table.sort(keys)
print(("| %-22s | %12s | %12s | %7s |"):format("config mode", "old img/s", "new img/s", "new/old"))
print("|---|---|---|---|")
for _, k in ipairs(keys) do
  local o, n = median(vals.old[k]), median(vals.new[k] or { 0 })
  print(("| %-22s | %12.2f | %12.2f | %7.3f |"):format(k, o, n, n / o))
end
LUA
rm -rf "$out"
