-- lua/fdm/profile.lua: fdm.profile_report, fdm.profile's rows as a table to print.
--   fdm.profile(true); train_step(); fdm.profile(false)
--   print(fdm.profile_report())                 -- every kernel, most time first
--   print(fdm.profile_report({ per = 10, per_name = "step", top = 8 }))   -- per step of 10, the 8 largest
-- Returns the text, then the total seconds and calls (divided by opts.per).
return function(fdm)
  function fdm.profile_report(opts)
    opts = opts or {}
    local rows, per = opts.rows or fdm.profile_rows(), opts.per or 1
    if type(per) ~= "number" or per <= 0 then error("profile_report: per must be a positive number", 2) end
    local total, calls = 0, 0
    for _, r in ipairs(rows) do total, calls = total + r.seconds, calls + r.calls end
    local fmt = "%-20s %-26s %-6s %9s %10s %6s"
    local each = per == 1 and "" or "/" .. (opts.per_name or tostring(per))
    local lines = { fmt:format("op", "kernel", "device", "calls" .. each, "ms" .. each, "share") }
    for i = 1, math.min(#rows, opts.top or #rows) do
      local r = rows[i]
      lines[#lines + 1] = ("%-20s %-26s %-6s %9.1f %10.3f %5.1f%%"):format(r.op, r.kernel, r.device, r.calls / per,
        r.seconds / per * 1e3, total > 0 and 100 * r.seconds / total or 0)
    end
    if opts.top and #rows > opts.top then lines[#lines + 1] = ("(%d more rows)"):format(#rows - opts.top) end
    lines[#lines + 1] = ("%-20s %-26s %-6s %9.1f %10.3f %5.1f%%"):format("total", "", "", calls / per,
      total / per * 1e3, 100)
    return table.concat(lines, "\n"), total / per, calls / per
  end
end
