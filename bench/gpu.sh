#!/usr/bin/env bash
# One script for a lent GPU machine (the `device` tool): GPU-only tests, then the
# paper-scale training benchmark on the GPU (ours and the plain reference). The GPU
# image has torch, numpy, pytest; nothing else is needed for these (no install step:
# nothing can be fetched there). Run from the repository root:
#   bash bench/gpu.sh
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
$py -m pytest -q -p no:cacheprovider -p no:xvfb -m gpu tests/core/test_gpu.py \
    tests/core/test_model.py tests/core/test_training.py 2>&1 | tail -5
$py -m pytest -q -p no:cacheprovider -p no:xvfb tests/core/test_model.py \
    tests/core/test_training.py 2>&1 | tail -2
$py bench/bench_training.py --device cuda --steps 20 --warmup 3
