# The GPU image of the NeMo fine-tune (FLYWHEEL_FINETUNE=nemo-k8s / nemo-ecs): NVIDIA's NeMo
# AutoModel container plus dagster-pipes and this project (the entry point imports only
# flywheel_core + dagster_pipes; the recipe's dataset factory is flywheel_core.ml.nemo_data).
#
#   docker build -f docker/nemo-automodel.Dockerfile \
#       --build-arg BASE_IMAGE=<NVIDIA's NeMo AutoModel container from the NGC catalog>:<tag> \
#       -t <registry>/flywheel-nemo-automodel:0.7.0 .
#
# UNVERIFIED: this image has not been built or run from this repository (no GPU, no container
# registry where it was written), and no base tag is named here because none was checked. Pick
# the NeMo AutoModel container release whose `pip show nemo-automodel` reports 0.7.0 (what the
# recipe template and scripts/nemo-automodel-constraints.txt are written against). Fallback:
# any CUDA PyTorch image plus `pip install -c scripts/nemo-automodel-constraints.txt
# nemo-automodel` without the constraints' CPU torch line.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

WORKDIR /opt/flywheel
COPY pyproject.toml README.md ./
COPY flywheel_core ./flywheel_core
COPY flywheel_assets ./flywheel_assets
COPY resources ./resources
COPY flywheel_cli ./flywheel_cli
COPY prompts ./prompts
COPY scripts/nemo-automodel-constraints.txt ./scripts/

# dagster-pipes at the orchestrator's release; the project without its (orchestrator)
# dependencies; the image's own torch / nemo-automodel stay as they are.
RUN python -m pip install --no-cache-dir "dagster-pipes==1.13.27" \
    && python -m pip install --no-cache-dir --no-deps -e . \
    && python -c "import dagster_pipes, flywheel_core.ml.nemo_data, nemo_automodel; \
print('nemo_automodel', nemo_automodel.__version__)"

ENV TOKENIZERS_PARALLELISM=false
# The launchers run: python -m flywheel_assets.external.nemo_automodel_lora
CMD ["python", "-m", "flywheel_assets.external.nemo_automodel_lora", "--help"]
