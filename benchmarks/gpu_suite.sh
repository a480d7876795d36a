#!/usr/bin/env bash
# Everything GPU-only, in one call on a lent GPU (under 8 minutes on an H100 without the compiled bench, SKIP=compiled):
#   1. the gpu-marked tests                      -> tests.json
#   2. mpno bench --preset ns128 (128²; also with every transform as a DFT), at 256² and at 96²
#      (not a power of two)    -> bench_ns128.json, bench_ns128_dft.json, bench_ns256.json, bench_ns96.json
#   3. benchmarks/fft_accuracy.py and benchmarks/contraction.py on CUDA -> fft_accuracy.json, contraction.json
#   4. the compiled model (mpno.compiled) at ns128 in full, mixed and half -> bench_ns128_compiled.json, and the
#      operations per step on the CPU and CUDA paths (mpno bench --count-ops) -> counts.json
#   5. benchmarks/peer_neuraloperator.py, if neuraloperator imports -> peer.json (and peer_counts.json)
# SKIP="contraction fft_accuracy compiled" leaves those steps out.
# Results go to $RESULTS_DIR (default benchmarks/results/<date>-<gpu>/), logs to suite.log there.
# Whatever is missing is skipped with the reason; with no CUDA device nothing runs and it exits 0.
#
#   bash benchmarks/gpu_suite.sh              # (set PYTHON to choose the interpreter)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-') if torch.cuda.is_available() else '')" 2>/dev/null)
if [ -z "$gpu" ]; then
    echo "gpu_suite: no CUDA device here: skipping the GPU tests, benchmarks and peer comparison"
    exit 0
fi
dir=${RESULTS_DIR:-benchmarks/results/$(date +%Y%m%d)-$gpu}
mkdir -p "$dir"
log="$dir/suite.log"
: > "$log"
echo "gpu_suite: $gpu, torch $("$PY" -c 'import torch; print(torch.__version__)'), results in $dir" | tee -a "$log"

# run NAME LIMIT CMD...: run CMD with a time limit, its output to the log, its last line to NAME.json
run() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name: $*" >> "$log"
    if timeout "$limit" "$@" > "$dir/.$name.out" 2>> "$log"; then
        tail -n 1 "$dir/.$name.out" > "$dir/$name.json"
        echo "gpu_suite: $name done in $((SECONDS - start)) s" | tee -a "$log"
    else
        echo "gpu_suite: $name FAILED or timed out after $((SECONDS - start)) s (see suite.log)" | tee -a "$log"
    fi
    cat "$dir/.$name.out" >> "$log"
    rm -f "$dir/.$name.out"
}

skip() { [[ " ${SKIP:-} " == *" $1 "* ]] && echo "gpu_suite: $1 skipped (SKIP)" | tee -a "$log"; }

# the gpu-marked tests: pytest's summary line becomes tests.json
start=$SECONDS
timeout 180 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider > "$dir/.tests.out" 2>&1
rc=$?
cat "$dir/.tests.out" >> "$log"
"$PY" -c "import json, sys; print(json.dumps({'exit_code': int(sys.argv[1]), 'summary': sys.argv[2]}))" \
    "$rc" "$(tail -n 1 "$dir/.tests.out")" > "$dir/tests.json"
rm -f "$dir/.tests.out"
echo "gpu_suite: tests exit code $rc in $((SECONDS - start)) s: $(cat "$dir/tests.json")" | tee -a "$log"

skip fft_accuracy || run fft_accuracy 60 "$PY" benchmarks/fft_accuracy.py --device cuda --json
run bench_ns128 120 "$PY" -m mpno bench --preset ns128 --device cuda --json
run bench_ns128_dft 120 "$PY" -m mpno bench --preset ns128 --fft-backend dft --device cuda --json
run bench_ns256 150 "$PY" -m mpno bench --preset ns128 --resolution 256 --device cuda --json
run bench_ns96 120 "$PY" -m mpno bench --preset ns128 --resolution 96 --device cuda --json
skip contraction || run contraction 150 "$PY" benchmarks/contraction.py --device cuda --json
skip compiled || run bench_ns128_compiled 300 "$PY" -m mpno bench --preset ns128 --device cuda --compile \
    --precisions mixed/float16 half/float16 half/bfloat16 --json
run counts 60 "$PY" -m mpno bench --count-ops --preset darcy64 --batch-size 2 --resolution 32 --json

if ! "$PY" -c "import wandb" 2>/dev/null; then
    # neuraloperator imports wandb at import time but its models never call it
    stubs=$(mktemp -d) && mkdir -p "$stubs/wandb" && : > "$stubs/wandb/__init__.py"
    export PYTHONPATH="$PYTHONPATH:$stubs"
fi
if "$PY" -c "import neuralop" 2>/dev/null; then
    run peer 150 "$PY" benchmarks/peer_neuraloperator.py --preset ns128 --device cuda --json
    run peer_counts 60 "$PY" benchmarks/peer_neuraloperator.py --preset darcy64 --batch 2 --grid 32 --count-ops --json
else
    echo "gpu_suite: peer comparison skipped: neuraloperator is not installed (carry its wheels, see benchmarks/README.md)" | tee -a "$log"
fi
echo "gpu_suite: finished in $SECONDS s" | tee -a "$log"
