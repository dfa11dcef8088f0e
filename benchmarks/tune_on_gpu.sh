#!/usr/bin/env bash
# Screen many variants of a preset at once on one GPU, each at a fixed number of iterations:
#
#     bash benchmarks/tune_on_gpu.sh ROWS.json [MNIST_DIR] [OUT_DIR]
#
# ROWS.json is a JSON list of [name, preset, {"section.field": value}] rows as benchmarks/tune_recommended.py
# takes them, each with its "train.iterations" (what the CPU reaches in the minutes that matter) and
# "train.max_minutes" (a safety stop). Every row runs in its own process on one CPU thread, all on the GPU
# together: eager steps of these small networks are bound by kernel launches, so the GPU has room for many.
# Each process appends one line to OUT_DIR/results.txt as it finishes. The ranking this gives is a screen;
# the figures that count are equal-time CPU runs.
set -uo pipefail
rows=$1
data=${2:-../shared/data/mnist}
out=${3:-runs/tune-gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
python=${PYTHON:-python3}
# The classifier behind the FID is trained once and cached; do it before the parallel runs share the cache.
$python -c "import sys; from mnist_gan.data.idx import load_idx_directory; from mnist_gan.evaluation.classifier import \
get_classifier; get_classifier(load_idx_directory(sys.argv[1]))" "$data" || exit 1
count=$($python -c "import json, sys; print(len(json.load(open(sys.argv[1]))))" "$rows")
for ((i = 0; i < count; i++)); do
    row=$($python -c "import json, sys; print(json.dumps([json.load(open(sys.argv[1]))[int(sys.argv[2])]]))" \
        "$rows" "$i")
    $python -m benchmarks.tune_recommended 0 "$row" --device "${DEVICE:-cuda}" --data "$data" --out "$out/runs" \
        --results "$out/results.txt" > "$out/row$i.log" 2>&1 &
done
wait
sort -t= -k4 -n "$out/results.txt" 2>/dev/null || true
