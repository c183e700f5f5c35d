-- wrk script: POST the file named by BODY_FILE with the Content-Type in CONTENT_TYPE.
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "text/csv"
wrk.headers["Accept"] = os.getenv("ACCEPT") or "*/*"
