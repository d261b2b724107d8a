#!/usr/bin/env bash
# Run rstack's test suite: checks Java, makes .venv if missing, installs with the dev extra, runs
# ruff and pytest (real Ray and Spark on Ray, small synthetic data). Extra args go to pytest.
source "$(dirname "$0")/_env.sh" "[dev]"
.venv/bin/ruff check rstack tests scripts
exec .venv/bin/python -m pytest "$@"
