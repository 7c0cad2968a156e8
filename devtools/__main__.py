"""`make run`: ``python -m devtools`` starts the whole service on this machine (devtools.launcher)."""

from __future__ import annotations

import os
import sys

from cli.main import DEMO_ORG
from cli.preflight import EXIT_UNAVAILABLE, unreachable_service
from devtools.launcher import run_dev
from service.errors import SettingsError
from service.logs import configure_logging
from service.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"make run: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, "dev")
    problem = unreachable_service(settings, "dev")
    if problem is not None:
        print(f"make run: {problem}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return run_dev(settings, DEMO_ORG)


if __name__ == "__main__":
    sys.exit(main())
