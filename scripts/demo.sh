#!/usr/bin/env bash
# The built-in demo: generate synthetic klines with rstack's own generator and train the full
# 3-level stack on a local Ray cluster with Spark on Ray, then write its report.html. No download needed.
source "$(dirname "$0")/_env.sh" ""
DATA=${RSTACK_DEMO_DATA:-demo-data}
if [ ! -d "$DATA" ]; then
  .venv/bin/rstack data synth "$DATA" --symbols 12 --rows 3000 --seed 7
fi
MODELS=${RSTACK_MODELS:-models}
.venv/bin/rstack train "$DATA" --models "$MODELS" "$@"
# The evaluation report of the run just trained: curves, calibration, baselines' verdict, leakage audit.
exec .venv/bin/rstack evaluate latest --models "$MODELS"
