"""The scheduler process: every EXPORT_WORKER_INTERVAL, send the periodic messages (expire
exports, sweep, prune rollups past the retention window, run due export schedules).

Run one. Two would only send duplicate ticks, which are harmless (each tick is idempotent).
"""

from __future__ import annotations

import logging
import threading

from actors.tasks import Actors

log = logging.getLogger(__name__)


def run_scheduler(actors: Actors, interval: float, stop: threading.Event) -> None:
    log.info("scheduler started", extra={"interval_s": interval})
    while not stop.is_set():
        for actor in actors.ticks:
            try:
                actor.send()
            except Exception as exc:
                # Not only Dramatiq's errors: pika raises ValueError when a connection is reset
                # mid-handshake (a broker restart, a network blip), and one such tick must not end
                # the only scheduler. The next interval tries again.
                log.warning(
                    "could not send a tick; will try next interval",
                    extra={"actor": actor.actor_name, "reason": f"{type(exc).__name__}: {exc}"},
                )
        stop.wait(interval)
    log.info("scheduler stopped")
