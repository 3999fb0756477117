"""The built-in chat server (``aiohttp``): nanochat's streaming protocol and OpenAI's API over a
pool of worker processes, each with a model and a continuously batching engine.

Modules: :mod:`.options` (no heavy imports), :mod:`.protocol` (reading requests), :mod:`.worker`
(the worker process), :mod:`.pool` (routing, queueing, dead workers), :mod:`.app` (the routes),
:mod:`.server` (start, listen, graceful shutdown). ``static/index.html`` is the web UI.
"""
