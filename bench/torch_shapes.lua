-- bench/torch_shapes.lua: runs a bench/torch_*.py script that prints
-- "torch C MAP N MS" lines and returns its times by "C:MAP:N" (ms); the
-- calling bench names itself in the failure message and exits 1 on it.
--   local torch_ms = dofile(HERE .. "/torch_shapes.lua")(name, HERE .. "/torch_x.py", "128:256:2 back")
return function(name, script, args)
  local p = io.popen(("/usr/bin/python3 %s %s 2>&1"):format(script, args))
  local text = p:read("a")
  if not p:close() then io.stderr:write(name .. ": PyTorch run failed:\n" .. text); os.exit(1) end
  local ms = {}
  for c, hw, n, t in text:gmatch("torch (%d+) (%d+) (%d+) ([%d.]+)") do ms[c .. ":" .. hw .. ":" .. n] = tonumber(t) end
  return ms
end
