#!/usr/bin/env bash
# The GPU check, for a lent device machine (run from the repository root; results to $OUT):
# the CUDA tests and benchmarks/gpu.py. That machine has torch but no Ray, MLflow or frame
# library, and no registry: pydantic travels as wheels in .whl/ (see README, "GPU").
set -o pipefail
OUT=${OUT:-bench-out/device}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/device.txt"
python3 -m pytest -q -p no:cacheprovider --noconftest -o addopts="" -k "gpu" \
  tests/signal/test_conditioner.py tests/models/test_inference.py \
  tests/serve/test_engine_device.py 2>&1 | tee "$OUT/cuda_tests.log"
tests=$?
python3 benchmarks/gpu.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
bench=$?
echo "cuda tests exit $tests, benchmark exit $bench"
exit $((tests || bench))
