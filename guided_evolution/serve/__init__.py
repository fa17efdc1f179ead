"""`ge serve`: a local, read-only web view of runs, live.

Why the standard library: the page needs GET requests, a few small JSON answers and polling,
which `http.server.ThreadingHTTPServer` does cleanly; a web framework (and its ASGI server)
would add dependencies and start-up time for routing that fits in one regular expression, and
push (websockets) is not needed for one update a second. Modules: `command` (the ``ge serve``
command), `server` (routes, escaping, access), `live` (a run's view data kept up to date),
`views` (the runs and one variant), `runs` (what is served, the lock holder); the page itself is
``static/`` (no inline script, no other origin).
"""
