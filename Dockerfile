# The weightzoo image for Ray heads and workers (cluster.yaml, deploy/kuberay/): Ray, torch and the
# project installed, the job scripts and the Serve app in /home/ray/weightzoo (the working directory).
#   docker build -t weightzoo:cpu .                                           # CPU nodes
#   docker build -t weightzoo:gpu --build-arg VARIANT=gpu \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .      # GPU nodes (CUDA torch)
ARG RAY_VERSION=2.60.0
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}

# torch from PyTorch's own index: the CPU build by default (a plain `pip install torch` is the CUDA one)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /home/ray/weightzoo
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users serve ./serve
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && pip install --no-cache-dir . \
    && python -c "import pipeline, serve.app, torch, faiss; print('weightzoo image ready, torch', torch.__version__)"
# Ray Serve's throughput-optimized mode for every process of the cluster (see serve/__init__.py)
ENV RAY_SERVE_THROUGHPUT_OPTIMIZED=1
