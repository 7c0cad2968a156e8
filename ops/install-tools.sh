#!/usr/bin/env bash
# Install the machine tools the test suite needs beyond the venv, if missing (dev machines and CI):
# docker-compose, Debian's Python v1, which parses and validates docker-compose.yml without a
# Docker engine (tests/house/test_compose.py); and Debian's Chromium, which the browser tests of
# the self-serve page drive through Playwright (tests/e2e/test_page.py). A no-op when both are there.
set -euo pipefail

need_compose=$(command -v docker-compose >/dev/null 2>&1 || echo yes)
need_chromium=$([ -x /usr/bin/chromium ] || echo yes)
[ -z "$need_compose$need_chromium" ] && exit 0

export DEBIAN_FRONTEND=noninteractive
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
updated=""
# apt_install PACKAGE [OPTIONS]: a fresh machine may have no package lists yet: fetch them once.
apt_install() {
    echo "installing $1 (Debian package)"
    $SUDO apt-get install -y -qq "${@:2}" "$1" >/dev/null 2>&1 && return 0
    [ -n "$updated" ] || { $SUDO apt-get update -qq >/dev/null; updated=yes; }
    $SUDO apt-get install -y -qq "${@:2}" "$1" >/dev/null
}
# docker-compose without its recommendation of a Docker engine; Chromium with its fonts.
[ -z "$need_compose" ] || apt_install docker-compose --no-install-recommends
[ -z "$need_chromium" ] || apt_install chromium
command -v docker-compose >/dev/null || { echo "docker-compose did not install" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "chromium did not install" >&2; exit 1; }
