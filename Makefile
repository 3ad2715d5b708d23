# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the project once (a stamp file skips it next time).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgexray-installed
DEMO_OUT ?= demo-out

.PHONY: install system-deps demo test test-fast lint clean

$(STAMP): setup.cfg setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	# TFLite metadata schema classes only: tflite-support's own pins (protobuf<4) clash with onnx's
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps tflite-support==0.4.4
	touch $(STAMP)

install: $(STAMP)

# Real servers and emulators the tests drive (sshd, QEMU user mode, debootstrap, Chromium).
# Installed only when missing and when we are root; otherwise those tests skip and say why.
system-deps:
	@bash tools/system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/edgexray build --target rpi4 --out $(DEMO_OUT) --force

test: $(STAMP) system-deps
	$(PY) -m pytest -q -rs --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# ruff.toml holds the rules; `ruff check --fix . && ruff format .` repairs most findings
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
