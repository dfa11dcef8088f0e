#!/usr/bin/env bash
# The GPU figures of the README's performance section, in one run of a few minutes on one GPU:
#
#     bash benchmarks/gpu_check.sh [MNIST_DIR] [OUT_DIR]
#
# 1. benchmarks/speed.py on CUDA, eager: the speed table (seed at batch 32 and 128, recommended at its default
#    batch; plain fp32 against the real loop in fp32 and bf16) and one epoch of the digits per case;
# 2. the command line end to end on the GPU: train, generate, evaluate;
# 3. the compiled variants (torch.compile with CUDA graphs), last because compiling takes the longest.
set -uo pipefail
data=${1:-../shared/data/mnist}
out=${2:-runs/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
$python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
status=0
$python -m benchmarks.speed --device cuda --data "$data" --no-compile --epoch --guard-iterations 0 \
    --window 10 --warmup 10 --iterations 50 || status=1
$python -m mnist_gan train --preset recommended --device cuda --data "$data" --iterations 300 \
    --sample-every 100 --out "$out/run" --overwrite || status=1
$python -m mnist_gan generate "$out/run" -n 64 --out "$out/samples.png" --overwrite || status=1
$python -m mnist_gan evaluate "$out/run" -n 2000 --data "$data" --cache-dir "$out/cache" --device cuda || status=1
$python -m benchmarks.speed --device cuda --data "$data" --compiled-only --guard-iterations 0 \
    --cases recommended seed:128 --window 10 --warmup 20 --iterations 50 || status=1
exit $status
