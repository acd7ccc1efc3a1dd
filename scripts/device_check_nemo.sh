#!/usr/bin/env bash
# One-shot GPU check of the NeMo AutoModel fine-tune, for a machine with CUDA:
#
#   scripts/device_check_nemo.sh
#
# Sets up both venvs (on a CUDA machine `pip install torch==2.13.0` resolves the CUDA build, so
# the same Makefile target and scripts/build_nemo_venv.sh give CUDA torches; both need the
# package registry or a warm pip cache), then runs the `gpu`-marked NeMo test: a flywheel cycle
# with FLYWHEEL_FINETUNE=nemo-subprocess where the recipe trains on the GPU with NCCL, bf16 and
# the Triton LoRA kernel, no CPU shim. Prints what it ran on; exits non-zero on any failure,
# including a machine where torch sees no GPU (the test would only be skipped there).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
make setup nemo-venv
for py in .venv/bin/python .venv-nemo/bin/python; do
    "$py" -c "import sys, torch; print(sys.argv[1], 'torch', torch.__version__, \
'cuda', torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 3)" "$py"
done
.venv/bin/python -m pytest -q -rA -m gpu tests/assets/test_flywheel_nemo.py
echo "device check done in $((SECONDS - started)) s"
