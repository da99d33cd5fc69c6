# LungFuse — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo_case
# Offline by construction: the text encoder and the LIDC database ship inside PyPI packages.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test test-fast venv lint typecheck demo bench clean apt package

# System packages the tests and later tools use (DICOM tools, PDF rendering, virtual screen; the
# libxcb-* that Qt's xcb platform plugin needs beyond xvfb's, for the GUI under a real X display).
# Installed only when missing and only when we are root (CI and the dev machines are).
APT_PKGS := dicom3tools poppler-utils xvfb chromium chromium-driver libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt: installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "apt: could not install$$missing (tests that need them will skip)"; \
	  else echo "apt: not root, skipping$$missing"; fi; \
	fi

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24" wheel
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

$(DEMO)/report.txt: $(STAMP)
	$(BIN)/lungfuse demo --out $(DEMO)

demo: $(DEMO)/report.txt

# The review window on the demo case.  Without a display (no DISPLAY / WAYLAND_DISPLAY, no
# QT_QPA_PLATFORM) it says so in one line, renders the window offscreen to out/demo_gui.png and
# prints the analysis summary of `lungfuse analyze` instead (the result goes to out/demo_result.json).
run: $(STAMP) $(DEMO)/report.txt
	$(BIN)/lungfuse info
	$(BIN)/lungfuse gui $(DEMO) --result out/demo_result.json --no-display out/demo_gui.png

# Static checks: style (ruff), the architecture's import contracts (.importlinter).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# Type check of the product packages (settings: pyproject.toml [tool.mypy]).  mypy cannot
# follow the package-dir mapping (folder pipelines/ = package lungfuse.pipelines), so it reads
# a tree of symlinks, build/typecheck/lungfuse/{app,models,pipelines}.
TYPECHECK_ROOT := build/typecheck/lungfuse
typecheck: $(STAMP)
	@mkdir -p $(TYPECHECK_ROOT) && for d in app models pipelines; do ln -sfn ../../../$$d $(TYPECHECK_ROOT)/$$d; done
	$(BIN)/mypy

# Everything, as CI runs it.
test: $(STAMP) apt lint typecheck
	$(BIN)/python -m pytest -q tests --durations=15

# The fast tier: no LIDC data (marker lidc), no model training or test over ~5 s (marker slow);
# under 2 minutes on the 2-core machine (tests/conftest.py says how the markers are applied).
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -q tests -m "not lidc and not slow" --durations=10

bench: $(STAMP)
	$(BIN)/python bench/bench_ingest.py --out bench/results/ingest.json
	$(BIN)/python bench/bench_analyze.py --out bench/results/analyze.json
	$(BIN)/python bench/bench_claims.py --out bench/results/claims_speed.json

# The desktop bundle (one folder, dist/LungFuse/): PyInstaller from packaging/requirements.txt (not a CI
# dependency), the spec names every resource the app reads; then the bundle starts once offscreen.
package: $(STAMP)
	$(BIN)/pip install -q -r packaging/requirements.txt
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/lungfuse.spec
	du -sh dist/LungFuse
	QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-offscreen} dist/LungFuse/LungFuse --smoke-test build/package_smoke.png

clean:
	rm -rf $(VENV) $(DEMO) build dist *.egg-info
