#!/usr/bin/env bash
# The main job end to end on the built-in tiny zoo, each job starting its own local Ray:
#   1. train the zoo as Ray tasks (66 models: 60 trained, 6 planted near-duplicate copies) and draw
#      its probe inputs (unlabeled training inputs the encoder runs each network on);
#   2. ingest it into weight-graph Parquet shards with Ray Data;
#   3. train a ScaleGMN encoder contrastively with Ray Train (a few epochs: a demo, not the
#      default zoo's figures);
#   4. embed_zoo: checkpoints -> (incremental ingest) -> embeddings table + faiss index;
#   5. query: the nearest models to one model, and the near-duplicate groups;
#   6. canonicalize: a small canonicalization autoencoder (ScaleGMN encoder, latent 32, 4 epochs on
#      the tiny zoo's 10 SIRENs: a demo of the pipeline, not of its accuracy) turns two SIRENs into
#      canonical networks and merges them by averaging their canonical forms;
#   7. weightzoo index / search with the encoder that ships with the package: no training, no labels;
#   8. lineage: which model derives from which, read from weights (the planted copies come back as
#      symmetry copies of their sources), and the HTTP app answering searches, uploads and lineage.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
ZOO="${ZOO:-data/zoo-tiny}"
GRAPHS="${GRAPHS:-data/graphs-tiny}"
RUNS="${RUNS:-runs/demo}"
INDEX="${INDEX:-data/index-tiny}"
PY=.venv/bin/python
if [ ! -f "$ZOO/catalog.parquet" ]; then
  $PY jobs/make_zoo.py --out "$ZOO" --preset tiny
fi
$PY jobs/ingest_zoo.py "$ZOO/models" --out "$GRAPHS"
PROBES=()  # the zoo's unlabeled probe inputs (zoos made before they existed have none)
if [ -f "$ZOO/probe_inputs.npz" ]; then PROBES=(--probe-inputs "$ZOO/probe_inputs.npz"); fi
$PY jobs/train_encoder.py --graphs "$GRAPHS" --catalog "$ZOO/catalog.parquet" --encoder scale_gmn \
    --epochs 4 --batch-size 16 --cpus-per-worker 1 "${PROBES[@]}" --out "$RUNS" --run-name demo 2>&1 \
    | grep -aE "test split|P@1|scale_gmn +[0-9]" || true
$PY jobs/embed_zoo.py --ingest "$ZOO/models" --graphs "$GRAPHS" --encoder-state "$RUNS/encoders/scale_gmn.pt" \
    --out "$INDEX"
echo
echo "== the 5 models nearest to moons-mlp-00000 =="
$PY jobs/query.py --index "$INDEX" --graphs "$GRAPHS" --catalog "$ZOO/catalog.parquet" --id moons-mlp-00000 --k 5
echo
echo "== ... among CNNs of at most 10,000 parameters =="
$PY jobs/query.py --index "$INDEX" --graphs "$GRAPHS" --catalog "$ZOO/catalog.parquet" --id moons-mlp-00000 --k 3 \
    --family cnn --max-params 10000
echo
$PY jobs/query.py --index "$INDEX" --graphs "$GRAPHS" --catalog "$ZOO/catalog.parquet" --near-duplicates \
    --report "$INDEX/near_duplicates.md" > /dev/null
head -n 20 "$INDEX/near_duplicates.md"
echo "... (the whole report: $INDEX/near_duplicates.md)"
echo
echo "== canonicalize two SIRENs and merge them in canonical space =="
mkdir -p "$RUNS"
$PY jobs/train_autoencoder.py --graphs "$GRAPHS" --catalog "$ZOO/catalog.parquet" --family inr --latent 32 \
    --epochs 4 --warmup-steps 10 --out "$RUNS" --run-name demo-ae > "$RUNS/demo-ae.log" 2>&1
cat "$RUNS/demo-ae-report.json"; echo
$PY jobs/canonicalize.py --autoencoder "$RUNS/autoencoders/demo-ae.pt" \
    --input "$ZOO/models/inr_digits-inr-00000.safetensors" "$ZOO/models/inr_digits-inr-00001.safetensors" \
    --out "$RUNS/canonical" --merge "$RUNS/canonical/merged.safetensors"
ls "$RUNS/canonical"
echo
echo "== any folder, no training: the encoder that ships with the package indexes the checkpoints =="
.venv/bin/weightzoo index "$ZOO/models" --out "$INDEX-shipped" 2>/dev/null | tail -n 1
.venv/bin/weightzoo search "$ZOO/models/moons-mlp-00000.safetensors" --index "$INDEX-shipped" --k 3 2>/dev/null
echo
echo "== lineage from weights alone: the zoo's forest (a planted copy's lineage is asked over HTTP below) =="
$PY jobs/lineage.py "$ZOO/models" --out "$RUNS/lineage" --no-plot 2>/dev/null
COPY=$($PY -c "import pyarrow.parquet as pq; print(next(r['model_id'] for r in pq.read_table('$ZOO/catalog.parquet').to_pylist() if r['transform'] == 'symmetry'))")
echo
echo "== the HTTP app on that index: a neighbour lookup, a model added with the bearer token, then found; lineage =="
export WEIGHTZOO_TOKEN="demo-$RANDOM$RANDOM"
.venv/bin/weightzoo serve --index "$INDEX-shipped" --catalog "$ZOO/catalog.parquet" --lineage "$RUNS/lineage" --port 8765 \
    > "$RUNS/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 90); do curl -sf 127.0.0.1:8765/readyz > /dev/null && break; sleep 2; done
curl -s '127.0.0.1:8765/models/moons-mlp-00000/neighbors?k=2'; echo
curl -s -o /dev/null -w "POST /models without the token: %{http_code}\n" --data-binary @"$RUNS/canonical/merged.safetensors" \
    '127.0.0.1:8765/models?filename=merged-siren.safetensors'
curl -s -H "Authorization: Bearer $WEIGHTZOO_TOKEN" --data-binary @"$RUNS/canonical/merged.safetensors" \
    '127.0.0.1:8765/models?filename=merged-siren.safetensors'; echo
curl -s '127.0.0.1:8765/models/merged-siren/neighbors?k=2'; echo
curl -s "127.0.0.1:8765/models/$COPY/lineage" | $PY -c "import json, sys; b = json.load(sys.stdin); print(b['model'], 'parents:', b['parents'])"
echo "(the search page: http://127.0.0.1:8765/ while weightzoo serve runs)"
kill "$SERVER"; wait "$SERVER" 2> /dev/null || true
