#!/usr/bin/env bash
# Install the machine tools the test suite needs beyond the venv, if missing (dev machines and CI):
# docker-compose, Debian's Python v1, which parses and validates docker-compose.yml without a
# Docker engine (tests/house/test_compose.py). A no-op when it is already installed.
set -euo pipefail

command -v docker-compose >/dev/null 2>&1 && exit 0

echo "installing docker-compose (Debian package)"
export DEBIAN_FRONTEND=noninteractive
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
apt_install() { $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
# A fresh machine may have no package lists yet: fetch them once, then try again.
apt_install 2>/dev/null || { $SUDO apt-get update -qq >/dev/null && apt_install; }
command -v docker-compose >/dev/null || { echo "docker-compose did not install" >&2; exit 1; }
