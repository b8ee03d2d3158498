-- wrk script: POST a JSON body. Usage:
--   wrk -s bench/wrk/post_json.lua URL -- '<json body>'
-- (default body: {"n": 1}).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"n": 1}'

function init(args)
  if #args > 0 then
    wrk.body = args[1]
  end
end
