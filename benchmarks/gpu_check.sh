#!/usr/bin/env bash
# The GPU checks in one call of at most 8 minutes (120 + 180 + 3 x 60 s) on a machine with one
# NVIDIA GPU:
#   1. the CUDA tests (tests/test_cuda.py, tests/test_gpu_path.py),
#   2. the realistic smear through `leukoscreen run` on the GPU (benchmarks/smear_benchmark.py),
#   3. the model benchmark: eager fp32, bf16 + channels_last, compiled; batch 8, 32, 128; FLOPs.
# Every step writes its log or JSON into RESULTS (default $OUT, else ./gpu-results) as it ends,
# so a step that runs out of time loses only itself; eight files in all.
#
# Usage (from the repository root):
#   bash benchmarks/gpu_check.sh                 # leukoscreen and its dependencies installed
#   WHEELS=.whl bash benchmarks/gpu_check.sh     # a bare machine: install the wheels in .whl
#                                                # (dask, distributed, zarr, openslide, ...) and
#                                                # import leukoscreen from this checkout
# The wheels for a bare machine with torch but without our stack (Python 3.12 there), fetched
# where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     dask distributed zarr numcodecs donfig google-crc32c locket partd tblib tornado zict \
#     openslide-python openslide-bin
# (imagecodecs is left out for size; the smear is then written with zlib tiles.)
# PEAK_TFLOPS (default 989: the H100/H200 SXM dense bf16 peak in NVIDIA's datasheets) sets the
# figure the achieved FLOP rate is compared with.
set -u
RESULTS=${RESULTS:-${OUT:-gpu-results}}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
started=$(date +%s)
stamp() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$RESULTS/steps.log"; }

if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  mkdir -p /tmp/lk/leukoscreen
  for part in model pipeline workflows; do ln -sfn "$PWD/$part" "/tmp/lk/leukoscreen/$part"; done
  export PYTHONPATH=/tmp/lk:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-python3}
machine=$({
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__)"
  nproc
} 2>&1 | tr '\n' ' ')
stamp "machine: $machine"

stamp "CUDA tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_gpu_path.py \
  > "$RESULTS/cuda_tests.log" 2>&1
stamp "CUDA tests: exit $? ($(tail -n 1 "$RESULTS/cuda_tests.log"))"

stamp "smear benchmark"
timeout 180 $PY benchmarks/smear_benchmark.py --device cuda --batch-size 64 --naive-cells 64 \
  --detect-tiles 8 --rounds 2 --out "$RESULTS/smear_cuda.json" > "$RESULTS/smear_cuda.log" 2>&1
stamp "smear benchmark: exit $?"

for batch in 8 32 128; do
  stamp "model benchmark, batch $batch"
  timeout 60 $PY benchmarks/model_benchmark.py --device cuda --batch-sizes "$batch" \
    --warmup 3 --repeats 10 --compile --flops --peak-tflops "$PEAK_TFLOPS" \
    > "$RESULTS/model_cuda_b$batch.json" 2>> "$RESULTS/model_cuda.log"
  stamp "model benchmark, batch $batch: exit $?"
done
stamp "done"
