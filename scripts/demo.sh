#!/usr/bin/env bash
# The main job end to end on the built-in tiny zoo: train the zoo as Ray tasks, then ingest it into
# weight-graph Parquet shards with Ray Data and print a summary. Each job starts a local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
ZOO="${ZOO:-data/zoo-tiny}"
GRAPHS="${GRAPHS:-data/graphs-tiny}"
if [ ! -f "$ZOO/catalog.parquet" ]; then
  .venv/bin/python jobs/make_zoo.py --out "$ZOO" --preset tiny
fi
.venv/bin/python jobs/ingest_zoo.py "$ZOO/models" --out "$GRAPHS"
