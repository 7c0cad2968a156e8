"""analytics-exports: the product's core.

Everything here is independent of the task queue: the API enqueues through the
:class:`service.queue.JobQueue` protocol, which ``actors/`` implements with Dramatiq.
"""
