# One entry point for people and CI. 'make test' and 'make demo' set everything up first when needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# MWAA 3.3.1 runs Python 3.12: python3.12 on PATH, else pyenv's newest 3.12.x (PYTHON=/path/to/python3.12 to choose).
PYTHON ?= $(shell for p in python3.12 $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V -r); do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v "$$p"; break; }; done)
SDK_VENV := .venv-sagemaker-sdk
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins

.PHONY: test-container-code sagemaker-sdk containers mutation test-repeat label-studio-install label-studio-up label-studio-down help setup up down status test test-unit test-integration lint demo demo-down bench constraints clean mwaa-bundle browser airflow-up airflow-down airflow-status

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: $(STAMP) containers browser label-studio-install sagemaker-sdk  ## .venv as MWAA 3.3.1 installs it (Python 3.12, MWAA's pins) + dev tools and FFmpeg; each container's own venv, chromium, Label Studio's and the SageMaker SDK's venvs

# Each container in an environment of its own (containers/<name>/.venv: its requirements.txt on its base image's
# Python); the local SageMaker runs jobs and endpoints with it. Rebuilt only when its requirements change.
containers: $(STAMP)  ## each container's own environment (containers/<name>/.venv, tests/containers/<name>/.venv) and the test environments of tested containers (tests/container_code/<name>/.venv)
	@$(BIN)/python -m local_aws.container_envs

# Label Studio in a venv of its own (.venv-label-studio; its pins clash with Airflow's): once, ~90 s.
label-studio-install: $(STAMP)
	@$(BIN)/python -m local_aws label-studio-install

# Debian's chromium for tests/e2e/test_airflow_ui.py (Playwright drives it by path; no browser download). Needs root
# and apt-get, as CI has; elsewhere it says what to do and the browser test skips itself.
browser:
	@if command -v chromium >/dev/null; then exit 0; \
	elif ! command -v apt-get >/dev/null; then \
		echo "note: no apt-get: install chromium yourself; until then the browser test is skipped"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "note: chromium missing: run 'sudo apt-get install chromium'; until then the browser test is skipped"; \
	else \
		echo "installing Debian's chromium (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
			chromium >/dev/null; \
	fi

# .venv is MWAA's Airflow environment (tools/mwaa_install.py: MWAA's required packages with its airflow_constraints.txt,
# then requirements.txt under its essential constraints) plus the dev tools; a .venv of another Python is rebuilt.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt constraints-dev.txt mwaa/3.3.1/airflow_constraints.txt
	@if [ -z "$(PYTHON)" ]; then echo "Python 3.12 is required (MWAA 3.3.1 runs 3.12.13) and none was found: install it (Debian's python3.12, 'pyenv install 3.12', or python.org) or pass PYTHON=/path/to/python3.12" >&2; exit 1; fi
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then \
		echo "$(VENV) is not Python 3.12: rebuilding it"; rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'pip==26.3'
	$(BIN)/python -m tools.mwaa_install requirements.txt -r requirements-dev.txt
	@# FFmpeg from the pinned imageio-ffmpeg wheel (a static build): no system package needed.
	ln -sf "$$($(BIN)/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" $(BIN)/ffmpeg
	$(BIN)/ffmpeg -hide_banner -version | head -n 1
	touch $(STAMP)

# The SageMaker Python SDK v3 needs boto3 >= 1.43.90 (sagemaker-core >= 2.22; older ones want importlib-metadata < 7,
# which Airflow 3.3.1 on 3.12 refuses), and MWAA 3.3.1 pins boto3 1.43.56: it cannot share MWAA's environment, so
# the test that drives the local SageMaker with it runs it from a venv of its own.
sagemaker-sdk: $(SDK_VENV)/.setup-done
$(SDK_VENV)/.setup-done: requirements-sagemaker-sdk.txt constraints-sagemaker-sdk.txt $(STAMP)
	test -x $(SDK_VENV)/bin/python || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'pip==26.3'
	$(SDK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-sagemaker-sdk.txt
	touch $@

up: setup  ## start the local AWS stack (background processes on loopback) and deploy infra/ (LABEL_STUDIO=1: Label Studio too)
	$(BIN)/python -m local_aws up
	@if [ "$(LABEL_STUDIO)" = 1 ]; then $(BIN)/python -m local_aws label-studio-up; fi

down:  ## stop exactly the local stack's processes (Label Studio included)
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m local_aws label-studio-down; $(BIN)/python -m local_aws down; fi

label-studio-up: up  ## the local Label Studio on :4569 (own venv, installed once; token in .local/label-studio/credentials.env)
	$(BIN)/python -m local_aws label-studio-up

label-studio-down:  ## stop the local Label Studio
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m local_aws label-studio-down; fi

airflow-up: up  ## local Airflow 3 services on the stack (UI/REST on :8080, login in .local/airflow/airflow.env)
	$(BIN)/python -m local_aws airflow-up

airflow-down:  ## stop the local Airflow services
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m local_aws airflow-down; fi

airflow-status: setup  ## health of each local Airflow service
	$(BIN)/python -m local_aws airflow-status

status: setup  ## health of each local stack process
	$(BIN)/python -m local_aws status

lint: setup  ## ruff, bandit, cfn-lint and hadolint (the IAM policy linter and the secrets scanner run in the tests)
	$(BIN)/ruff check .
	$(BIN)/hadolint --config .hadolint.yaml containers/*/Dockerfile tests/containers/*/Dockerfile compose/stack.Dockerfile
	$(BIN)/bandit -q -c pyproject.toml --severity-level high -r dags include plugins local_aws tools containers
	$(BIN)/cfn-lint infra/*.yaml

# Two workers, one test module each at a time (--dist loadfile): the end-to-end modules spend most of their time
# waiting on jobs and sensors, so two of them overlap well on 2 cores; each worker has its own local stack.
test: setup lint  ## set up, lint and run every test (unit, integration against the local stack, end-to-end)
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-container-code: setup  ## the tests of container code in each container's test env (NAME=trainer|inference|drift_monitor|frame_extractor, ARGS=pytest args)
	$(BIN)/python tests/container_code/run.py $(NAME) $(ARGS)

test-unit: setup
	$(BIN)/python -m pytest -m "not integration and not e2e and not bundle"

mwaa-bundle: setup  ## dist/mwaa/: what MWAA syncs from S3 (dags/ with include/, flat plugins.zip, requirements.txt, startup.sh)
	$(BIN)/python -m tools.mwaa_bundle --out dist/mwaa

demo: setup  ## the whole loop on the defaults: Label Studio + Processing-job drift monitor (LABELING_BACKEND=ground_truth, MONITORING_BACKEND=model_monitor: the opt-ins)
	$(BIN)/python -m local_aws.demo --labeling-backend $(or $(LABELING_BACKEND),label_studio) --monitoring-backend $(or $(MONITORING_BACKEND),processing)

demo-down: airflow-down down  ## stop everything the demo started

bench: setup  ## benchmarks (figures and ratios against a baseline measured in the same run)
	@shopt -s nullglob; for script in bench/*.py; do [ "$$script" = bench/mutation.py ] && continue; \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done

mutation: setup  ## mutation testing of the gates (mutmut; per module killed/survived, RESULT line; ONLY="promotion deploy")
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -c constraints-dev.txt -r requirements-mutation.txt
	$(BIN)/python bench/mutation.py $(if $(ONLY),--only $(ONLY))

test-repeat:  ## flake watch: the whole suite N times (default 3), each from a fresh clone of HEAD; per-test failures
	$(or $(shell command -v python3),python3) tools/test_repeat.py --runs $(or $(N),3)

constraints:  ## constraints.txt from MWAA's (tools/mwaa_constraints.py); re-resolve constraints-dev.txt (needs PyPI)
	$(PYTHON) -m tools.mwaa_constraints
	rm -rf /tmp/constraints-venv && $(PYTHON) -m venv /tmp/constraints-venv
	/tmp/constraints-venv/bin/pip install --quiet 'pip==26.3'
	/tmp/constraints-venv/bin/python -m tools.mwaa_install requirements.txt -r requirements-dev.txt
	{ head -n 2 constraints-dev.txt; /tmp/constraints-venv/bin/pip freeze --exclude-editable | $(PYTHON) -m tools.mwaa_constraints --dev-only; } > constraints-dev.txt.new && mv constraints-dev.txt.new constraints-dev.txt

clean: down  ## remove the venv and the local state
	rm -rf $(VENV) $(SDK_VENV) .venv-label-studio .local dist containers/*/.venv tests/containers/*/.venv
