#!/usr/bin/env bash
# Build (or reuse) the NeMo AutoModel venv the `nemo-*` fine-tune launchers run:
#
#   scripts/build_nemo_venv.sh [VENV_DIR]      # default .venv-nemo; `make nemo-venv` calls it
#
# CPU torch 2.13.0 first (so nothing pulls CUDA wheels), then nemo-automodel 0.7.0 under
# scripts/nemo-automodel-constraints.txt, dagster-pipes, and this project without its
# dependencies (the entry point needs flywheel_core + dagster_pipes only). A stamp file named
# after the hash of this script and the constraints marks a finished build: a second run with
# the same pins returns at once; a changed pin rebuilds. About 4 min and 2.9 GB the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-nemo}
PYTHON=${PYTHON:-python3.11}
CONSTRAINTS=scripts/nemo-automodel-constraints.txt
HASH=$(cat "$0" "$CONSTRAINTS" | sha256sum | cut -c1-12)
STAMP="$VENV/.built-$HASH"
if [[ -f "$STAMP" ]]; then
    echo "NeMo AutoModel venv $VENV is up to date ($STAMP)"
    exit 0
fi
started=$SECONDS
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c "$CONSTRAINTS" nemo-automodel dagster-pipes
# This checkout's packages, without their (orchestrator) dependencies. flywheel_core needs
# pydantic and pyyaml, which nemo-automodel already brings.
"${PIP[@]}" --no-deps -e .
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md

import dagster_pipes  # noqa: F401
import nemo_automodel.components._peft.lora  # noqa: F401  (imports the triton LoRA kernel)
from nemo_automodel.recipes.llm.train_ft import TrainFinetuneRecipeForNextTokenPrediction  # noqa: F401

import flywheel_core.ml.finetune_job  # noqa: F401

for name in ("nemo-automodel", "torch", "transformers", "triton", "dagster-pipes"):
    print(f"{name}=={md.version(name)}")
PY
touch "$STAMP"
echo "built $VENV in $((SECONDS - started)) s ($(du -sh "$VENV" | cut -f1))"
