"""``nanochat datagen``: synthetic conversations from a teacher behind an OpenAI-compatible API.

Light on purpose (the plugin module imports :mod:`.options` at registration); the runner, the
teacher client and the Celery parts are imported by the command when it runs.
"""
