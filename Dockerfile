# sagecraft: one image that trains (`docker run IMAGE train`) and serves (`docker run IMAGE serve`)
# XGBoost, random forests and any installed algorithm plugin under the SageMaker contract.
#
#   docker build -t sagecraft .                                    # CPU image
#   docker build --build-arg XGBOOST_PACKAGE=xgboost -t sagecraft:gpu .   # XGBoost's CUDA build
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# xgboost-cpu is XGBoost without its CUDA libraries (about 19 MB against 1.3 GB); name `xgboost`
# here for an image whose models train with device=cuda on GPU instances.
ARG XGBOOST_PACKAGE=xgboost-cpu

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true

# MPLCONFIGDIR: matplotlib's font cache, built once here instead of at the start of every job
# (the training report draws its figures with matplotlib).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/usr/local/share/sagecraft/matplotlib

# Dependencies first, in their own layer: it changes only when pyproject.toml does. The test
# suites, C headers and Cython sources of the wheels are never used at run time and are dropped.
COPY pyproject.toml /tmp/sagecraft/pyproject.toml
RUN python -c "import tomllib; d = tomllib.load(open('/tmp/sagecraft/pyproject.toml', 'rb')); print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && if [ "$XGBOOST_PACKAGE" != "xgboost-cpu" ]; then \
      version=$(python -c "import xgboost; print(xgboost.__version__)") \
      && pip uninstall -y xgboost-cpu && pip install "$XGBOOST_PACKAGE==$version"; \
    fi \
 && site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && find "$site" -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf "$site/pyarrow/include" "$site/pyarrow/src" \
 && find "$site" \( -name "*.pxd" -o -name "*.pyx" -o -name "*.pxi" \) -delete \
 && python -c "import matplotlib.font_manager"

# The package itself, installed (not editable); the source tree does not stay in the image.
COPY . /tmp/sagecraft
# The flat tree walk compiled once here (numba caches it beside the module) rather than when each
# endpoint starts.
RUN pip install --no-deps /tmp/sagecraft && rm -rf /tmp/sagecraft /tmp/requirements.txt /root/.cache \
 && python -c "import sagecraft.flat_trees as f; f.compile_walk()"

# Nothing lives under /opt/ml: SageMaker mounts over it.
EXPOSE 8080
ENTRYPOINT ["sagecraft"]
