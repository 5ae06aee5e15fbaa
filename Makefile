# One entry point for people and CI. 'make test' and 'make demo' set everything up first when needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins

.PHONY: containers mutation test-repeat label-studio-install label-studio-up label-studio-down help setup up down status test test-unit test-integration lint demo demo-down bench constraints clean mwaa-bundle browser airflow-up airflow-down airflow-status

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: $(STAMP) containers browser label-studio-install  ## create .venv with Python 3.11, pinned dependencies and FFmpeg (+ each container's own venv, chromium, Label Studio's venv)

# Each container in an environment of its own (containers/<name>/.venv: its requirements.txt on its base image's
# Python); the local SageMaker runs jobs and endpoints with it. Rebuilt only when its requirements change.
containers: $(STAMP)  ## each container's own environment (containers/<name>/.venv, tests/containers/<name>/.venv)
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

$(STAMP): requirements.txt requirements-dev.txt constraints.txt constraints-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (MWAA runs 3.11), found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'pip==26.3'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# FFmpeg from the pinned imageio-ffmpeg wheel (a static build): no system package needed.
	ln -sf "$$($(BIN)/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" $(BIN)/ffmpeg
	$(BIN)/ffmpeg -hide_banner -version | head -n 1
	touch $(STAMP)

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
	$(BIN)/hadolint --config .hadolint.yaml containers/*/Dockerfile tests/containers/*/Dockerfile
	$(BIN)/bandit -q -c pyproject.toml --severity-level high -r dags include plugins local_aws tools containers
	$(BIN)/cfn-lint infra/*.yaml

# Two workers, one test module each at a time (--dist loadfile): the end-to-end modules spend most of their time
# waiting on jobs and sensors, so two of them overlap well on 2 cores; each worker has its own local stack.
test: setup lint  ## set up, lint and run every test (unit, integration against the local stack, end-to-end)
	$(BIN)/python -m pytest -n 2 --dist loadfile

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
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-dev.txt -r requirements-mutation.txt
	$(BIN)/python bench/mutation.py $(if $(ONLY),--only $(ONLY))

test-repeat:  ## flake watch: the whole suite N times (default 3), each from a fresh clone of HEAD; per-test failures
	$(or $(shell command -v python3),python3) tools/test_repeat.py --runs $(or $(N),3)

constraints:  ## re-resolve the pinned sets (needs network to PyPI)
	rm -rf /tmp/constraints-venv && $(PYTHON) -m venv /tmp/constraints-venv
	/tmp/constraints-venv/bin/pip install --quiet 'pip==26.3'
	/tmp/constraints-venv/bin/pip install --quiet $$(grep -E '^[a-z]' requirements.txt)
	{ head -n 2 constraints.txt; /tmp/constraints-venv/bin/pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	/tmp/constraints-venv/bin/pip install --quiet $$(grep -E '^[a-z]' requirements-dev.txt)
	{ head -n 1 constraints-dev.txt; /tmp/constraints-venv/bin/pip freeze --exclude-editable; } > constraints-dev.txt.new && mv constraints-dev.txt.new constraints-dev.txt

clean: down  ## remove the venv and the local state
	rm -rf $(VENV) .venv-label-studio .local dist containers/*/.venv tests/containers/*/.venv
