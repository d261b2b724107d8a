#!/usr/bin/env bash
# Run rstack's test suite: checks Java, makes .venv if missing, installs with the dev extra, runs
# ruff (lint and format), mypy and pytest (real Ray and Spark on Ray, small synthetic data). Extra args go to pytest.
source "$(dirname "$0")/_env.sh" "[dev]"
# The report test renders report.html in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the report test (apt-get)"
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "warning: could not install chromium" >&2
fi
.venv/bin/ruff check rstack tests scripts
.venv/bin/ruff format --check rstack tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
