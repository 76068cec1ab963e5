# Pipeline Explorer: development tasks (GNU make).
#
#   make run          create .venv, install the project, serve it on http://127.0.0.1:8050
#   make test         install the test extras (+ Debian chromium/chromedriver, nginx-light), run pytest
#   make bench        run bench/run_all.py (if present)
#   make lint-docker  hadolint the Dockerfile
#   make clean        remove caches and build output (distclean: also .venv)
#
# Override variables on the command line or in the environment, e.g.
#   make run PIPEX_BIND=127.0.0.1:9000      make test PYTEST_ARGS='-k deploy -x'

PYTHON ?= python3
VENV ?= .venv
PIPEX_BIND ?= 127.0.0.1:8050
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
# nginx: the reverse proxy of deploy/nginx.conf, started by tests/test_proxy.py
NGINX ?= /usr/sbin/nginx
APT_PACKAGES ?= chromium chromium-driver nginx-light

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

BIN := $(VENV)/bin
VENV_PY := $(BIN)/python
HADOLINT ?= $(BIN)/hadolint
# Stamps: reinstall only when pyproject.toml (or the venv) changes.
STAMP_RUN := $(VENV)/.pipex-installed-run
STAMP_TEST := $(VENV)/.pipex-installed-test
# The venv's tools first on PATH (pytest runs gunicorn and hadolint from there).
VENV_PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv install install-test browser run test bench lint-docker clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

# --- environment ---------------------------------------------------------------------------

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

venv: $(VENV)/pyvenv.cfg  ## create the virtualenv

$(STAMP_RUN): pyproject.toml $(VENV)/pyvenv.cfg
	$(VENV_PY) -m pip install -e .
	touch $@

# The test extras include everything `run` needs: one install satisfies both stamps.
$(STAMP_TEST): pyproject.toml $(VENV)/pyvenv.cfg
	$(VENV_PY) -m pip install -e '.[test]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)  ## install the project into the virtualenv

install-test: $(STAMP_TEST)  ## install the project with its test extras

browser:  ## install Debian's chromium, chromium-driver and nginx-light if missing
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ] && [ -x "$(NGINX)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "error: $(CHROMIUM), $(CHROMEDRIVER) or $(NGINX) is missing and apt-get is not available;" \
			"install Chromium, its driver and nginx, or set CHROMIUM=... CHROMEDRIVER=... NGINX=..." >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else \
		echo "error: $(CHROMIUM), $(CHROMEDRIVER) or $(NGINX) is missing; installing them needs root" \
			"(run as root, or install: apt-get install $(APT_PACKAGES))" >&2; \
		exit 1; \
	fi; \
	echo "installing $(APT_PACKAGES) with apt-get"; \
	$$sudo apt-get update; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	if ! [ -x "$(CHROMIUM)" ] || ! [ -x "$(CHROMEDRIVER)" ] || ! [ -x "$(NGINX)" ]; then \
		echo "error: apt-get finished but $(CHROMIUM), $(CHROMEDRIVER) or $(NGINX) is still missing" >&2; \
		exit 1; \
	fi

# --- tasks ---------------------------------------------------------------------------------

run: $(STAMP_RUN)  ## serve the app with gunicorn (PIPEX_BIND, default 127.0.0.1:8050)
	PIPEX_BIND='$(PIPEX_BIND)' PATH='$(VENV_PATH)' exec gunicorn -c gunicorn.conf.py app:server

test: $(STAMP_TEST) browser  ## run the whole test suite
	PATH='$(VENV_PATH)' $(VENV_PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP_RUN)  ## run the benchmarks (bench/run_all.py)
	@if [ -f bench/run_all.py ]; then \
		PATH='$(VENV_PATH)' $(VENV_PY) bench/run_all.py; \
	else \
		echo "bench/run_all.py does not exist yet: nothing to run"; \
	fi

lint-docker: $(STAMP_TEST)  ## lint the Dockerfile with hadolint
	$(HADOLINT) Dockerfile

clean:  ## remove caches and build output (keeps .venv and var/)
	rm -rf build dist ./*.egg-info .pytest_cache $(STAMP_RUN) $(STAMP_TEST)
	find . -path './$(VENV)' -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean  ## also remove the virtualenv
	rm -rf $(VENV)
