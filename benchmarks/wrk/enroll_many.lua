-- Copied from the team's shared bench kit (/work/shared/bench/enroll_many.lua), unchanged below this
-- line, so that a clone of the repository without /work/shared can run benchmarks/run.py's OTP mode.
-- wrk script: POST a different base64 PKCS#10 CSR on every request (read from CSR_FILE, one
-- unwrapped base64 CSR per line), with HTTP Basic auth from EST_USER/EST_PASS when set.
-- usage: CSR_FILE=csrs.txt EST_USER=u EST_PASS=p wrk -t1 -c32 -d10s --latency -s enroll_many.lua URL
-- WRK_CLOSE=1 adds 'Connection: close' (a new TLS connection per request).
-- CRED_FILE=creds.txt (lines "user:pass") rotates credentials: line i of CSR_FILE goes with
-- credential i mod #creds (make_csrs.py N PREFIX OUT NCREDS writes CSRs that match).
local bodies, i = {}, 0
for line in io.lines(os.getenv("CSR_FILE")) do bodies[#bodies + 1] = line .. "\n" end
local function b64(data)
  local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  return ((data:gsub('.', function(x)
    local r, bb = '', x:byte()
    for k = 8, 1, -1 do r = r .. (bb % 2 ^ k - bb % 2 ^ (k - 1) > 0 and '1' or '0') end
    return r end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if (#x < 6) then return '' end
    local c = 0
    for k = 1, 6 do c = c + (x:sub(k, k) == '1' and 2 ^ (6 - k) or 0) end
    return b:sub(c + 1, c + 1) end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
local headers = { ["Content-Type"] = "application/pkcs10" }
if os.getenv("EST_USER") then
  headers["Authorization"] = "Basic " .. b64(os.getenv("EST_USER") .. ":" .. (os.getenv("EST_PASS") or ""))
end
if os.getenv("WRK_CLOSE") then headers["Connection"] = "close" end
local creds = {}
if os.getenv("CRED_FILE") then
  for line in io.lines(os.getenv("CRED_FILE")) do creds[#creds + 1] = "Basic " .. b64(line) end
end
request = function()
  i = i % #bodies + 1
  if #creds > 0 then headers["Authorization"] = creds[(i - 1) % #creds + 1] end
  return wrk.format("POST", nil, headers, bodies[i])
end
