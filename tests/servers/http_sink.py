"""A real HTTP server for the delivery tests (Python's http.server):
records every request it gets and answers each from a plan.

Usage: http_sink.py RECORD_FILE PLAN [PORT]

PLAN is a comma-separated list of answers, one per request in order, the
last repeated for ever: a status ("500", "200"), optionally with a
Retry-After in seconds ("429:1"). Every request is appended to RECORD_FILE
as one JSON line (time, path, status answered, headers, body) before it is
answered. The port it listens on (127.0.0.1: PORT, or one the kernel
chooses) is the first line on standard output.
"""
import http.server
import json
import sys
import threading
import time

record_path, plan = sys.argv[1], sys.argv[2].split(",")
port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
lock = threading.Lock()
answered = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        global answered
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with lock:
            step = plan[min(answered, len(plan) - 1)]
            answered += 1
            status, _, retry_after = step.partition(":")
            with open(record_path, "a", encoding="utf-8") as record:
                record.write(json.dumps({
                    "time": time.time(),
                    "method": self.command,
                    "path": self.path,
                    "status": int(status),
                    "headers": {name.lower(): value for name, value in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                }) + "\n")
        self.send_response(int(status))
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = answer
    do_PUT = answer
    do_PATCH = answer

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
