-- wrk script for etcd's v3 JSON gateway (POST /v3/kv/put and /v3/kv/range), used by
-- benchmarks/compare. Keys file: base64 keys; value file: the base64 value.
-- Reads are etcd's default linearizable range (serializable=false).

function make_write(key_b64, value_b64)
   return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
                     '{"key":"' .. key_b64 .. '","value":"' .. value_b64 .. '"}')
end

function make_read(key_b64)
   return wrk.format("POST", "/v3/kv/range", {["Content-Type"] = "application/json"},
                     '{"key":"' .. key_b64 .. '"}')
end

local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(os.getenv("KV_WRK_DIR") and (os.getenv("KV_WRK_DIR") .. "/kv_common.lua")
       or (here .. "kv_common.lua"))
