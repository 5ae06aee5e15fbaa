# The local AWS stack's image in docker-compose.yaml (local-aws, local-sagemaker, local-apigateway,
# local-aws-bootstrap, mwaa-environment): the project's Airflow environment exactly as 'make setup' installs .venv,
# i.e. MWAA 3.3.1's Python (3.12) and pins, by the same command (tools/mwaa_install.py: MWAA's required packages with
# its airflow_constraints.txt, then requirements.txt under its essential constraints, then the dev tools).
# Airflow itself does not run on this image: compose runs it on MWAA's own (amazon-mwaa-docker-images/airflow:3.3.1).
# Code is not copied: compose bind-mounts the checkout on /opt/project, as 'make up' runs it from the checkout.
#
# Python 3.12.13, the Python of MWAA 3.3.1 (PYTHON_VERSION in aws/amazon-mwaa-docker-images'
# images/airflow/3.3.1/Dockerfiles/Dockerfile.base). The digest is the python:3.12-slim-bookworm index (tagged
# 3.12.13-slim-bookworm too) that public build files pin; no registry is reachable where this was written, so
# re-pin it with 'docker buildx imagetools inspect python:3.12-slim-bookworm' where one is.
FROM python:3.12-slim-bookworm@sha256:4766d8b510c428e595d74b9cc5bbb2fae8e26316fffb4adc89908d79aacd58a2

# MWAA's required packages include psycopg2 and pycurl, built from source: MWAA's image installs postgresql-devel and
# libcurl-devel for them (bootstrap/01-root-firstpass/100-install-needed-dnf-packages.sh); these are Debian's.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libpq-dev libcurl4-openssl-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/project
# Only the install's inputs (stack.Dockerfile.dockerignore lets nothing else into the build context).
COPY requirements.txt requirements-dev.txt constraints.txt constraints-dev.txt ./
COPY mwaa/3.3.1/ mwaa/3.3.1/
COPY tools/__init__.py tools/mwaa_install.py tools/
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# The Makefile's $(STAMP) recipe, on this image's Python: pip, MWAA's install, FFmpeg from the imageio-ffmpeg wheel.
RUN python -m pip install --no-cache-dir 'pip==26.3' \
    && python -m tools.mwaa_install requirements.txt -r requirements-dev.txt \
    && ln -sf "$(python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" /usr/local/bin/ffmpeg \
    && ffmpeg -hide_banner -version >/dev/null
