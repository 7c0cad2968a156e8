"""Tooling for developers, never for production: `make run` (``python -m devtools``) and the
local stand-ins it and the tests use (a moto S3 server, fresh databases, free ports).

Production code (``service/``, ``actors/``, ``cli/``) never imports it, and the wheel the
container image installs does not contain it.
"""
