-- wrk script for ringkv's HTTP API (PUT/GET /v1/kv/{key}), used by benchmarks/compare.
-- Keys file: percent-encoded keys; value file: the raw value bytes.
-- KV_RINGKV_QUERY_W / KV_RINGKV_QUERY_R: the consistency query (default w=quorum / r=quorum).

local w = os.getenv("KV_RINGKV_QUERY_W") or "w=quorum"
local r = os.getenv("KV_RINGKV_QUERY_R") or "r=quorum"

function make_write(key, value)
   return wrk.format("PUT", "/v1/kv/" .. key .. "?" .. w,
                     {["Content-Type"] = "application/octet-stream"}, value)
end

function make_read(key)
   return wrk.format("GET", "/v1/kv/" .. key .. "?" .. r, {}, nil)
end

local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(os.getenv("KV_WRK_DIR") and (os.getenv("KV_WRK_DIR") .. "/kv_common.lua")
       or (here .. "kv_common.lua"))
