-- wrk script: POST a body with a bearer key (BENCH_KEY) to the URL's path.
-- The body is BENCH_BODY_FILE's content when set (large bodies do not fit in the
-- environment), else BENCH_BODY. BENCH_HEADERS adds headers, "name: value" per line.
wrk.method = "POST"
local file = os.getenv("BENCH_BODY_FILE")
if file and file ~= "" then
  local f = assert(io.open(file, "rb"))
  wrk.body = f:read("*a")
  f:close()
else
  wrk.body = os.getenv("BENCH_BODY")
end
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
local extra = os.getenv("BENCH_HEADERS")
if extra and extra ~= "" then
  for line in extra:gmatch("[^\n]+") do
    local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
    if name then wrk.headers[name] = value end
  end
end
