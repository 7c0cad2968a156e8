"""The command line: `analytics-exports`, the composition root that wires ``service/`` and
``actors/`` into processes (api, worker, scheduler, migrate...), and the REST API's client
(`analytics-exports export`)."""
