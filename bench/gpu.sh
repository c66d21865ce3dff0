#!/usr/bin/env bash
# The one script for a lent GPU machine (the `device` tool; no network there): the GPU
# tests, then bench/bench_gpu.py (step table against the release's module, top kernels,
# validation pass, time to a finished map at Algonauts size), printing tables to paste
# into BENCHMARKS.md. It needs only what such a machine has (python3 with torch, numpy,
# scipy, matplotlib, safetensors, pytest): nothing is installed. About 8 minutes on an
# H200. From the repository root:
#   bash bench/gpu.sh                          # everything
#   SECTIONS=steps,profile,validation bash bench/gpu.sh
#   SECTIONS=map TESTS=0 bash bench/gpu.sh
# Results also go, as JSON lines and a log, to $OUT (the device tool's folder) or gpu-out/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
dest="${OUT:-gpu-out}"
mkdir -p "$dest"
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
if [ "${TESTS:-1}" != 0 ]; then
    echo "## GPU tests"
    $py -m pytest -q -p no:cacheprovider -m gpu tests/core/test_gpu.py 2>&1 | tail -15
    echo "## model tests (CPU and the dense path)"
    $py -m pytest -q -p no:cacheprovider tests/core/test_model.py 2>&1 | tail -3
fi
$py bench/bench_gpu.py --sections "${SECTIONS:-steps,profile,validation,map}" \
    --out "$dest/gpu-bench.jsonl" ${BENCH_ARGS:-} 2>&1 | tee "$dest/gpu-bench.log"
