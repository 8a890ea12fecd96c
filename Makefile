# mmhybrid: set-up and the two everyday commands.
#
#   make demo   install what is missing into .venv, then run the quick start
#   make test   install what is missing into .venv, then run the test suite
#
# Each install step leaves a stamp in .venv, so a second run installs nothing.
# A prebuilt mmcv wheel is used when PIP_FIND_LINKS names a folder holding one;
# otherwise mmcv 2.1.0 is built from source with its compiled ops and the built
# wheel is kept in .wheels/ (a later install reuses it).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WHEELHOUSE := $(CURDIR)/.wheels
# pip reads PIP_FIND_LINKS from the environment; keep the caller's folders for mmcv.
CALLER_FIND_LINKS := $(PIP_FIND_LINKS)
PIP := $(PY) -m pip install --disable-pip-version-check -c requirements/constraints.txt

.PHONY: install demo test test-serial test-fast clean-venv

install: $(VENV)/.stamp-mmhybrid

# torch: point PIP_FIND_LINKS at the project's own wheel folder only. A machine's pip
# configuration may add a folder with the CPU-only torch build (2.13.0+cpu, which pip
# prefers as a local version); that build has no working torchvision, so timm breaks.
$(VENV)/.stamp-torch: requirements/torch.txt requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(WHEELHOUSE)
	PIP_FIND_LINKS="$(WHEELHOUSE)" $(PIP) -r requirements/torch.txt
	$(PY) tools/misc/check_env.py torch
	@touch $@

# mmcv 2.1.0 with its compiled ops: a wheel from PIP_FIND_LINKS or .wheels when there is
# one, else a source build (--no-build-isolation: it needs the installed torch, and an
# isolated build either lacks pkg_resources or silently skips the ops).
#
# FORCE_CUDA=1 builds the CUDA ops too (no GPU needed): check_env.py cuda-build first finds
# nvcc, checks its CUDA version against torch's and compiles a probe for every architecture
# of TORCH_CUDA_ARCH_LIST (default in check_env.py), then the build runs with the CUDA_HOME
# and TORCH_CUDA_ARCH_LIST it prints. CUDA wheels are kept apart, in .wheels/cuda.
MMCV_WHEELS = $(if $(filter 1,$(FORCE_CUDA)),$(WHEELHOUSE)/cuda,$(WHEELHOUSE))
$(VENV)/.stamp-mmcv: $(VENV)/.stamp-torch requirements/build.txt
	PIP_FIND_LINKS="$(WHEELHOUSE)" $(PIP) -r requirements/build.txt
	@mkdir -p $(MMCV_WHEELS) && rm -f $(VENV)/.cuda-env
	@if [ "$${FORCE_CUDA:-0}" = 1 ]; then $(PY) tools/misc/check_env.py cuda-build > $(VENV)/.cuda-env; fi
	if [ -f $(VENV)/.cuda-env ]; then . $(VENV)/.cuda-env; fi; \
	  PIP_FIND_LINKS="$(MMCV_WHEELS) $(CALLER_FIND_LINKS)" MMCV_WITH_OPS=1 FORCE_CUDA=$${FORCE_CUDA:-0} \
	  MAX_JOBS=$${MAX_JOBS:-2} CFLAGS="$${CFLAGS:--g0}" CXXFLAGS="$${CXXFLAGS:--g0}" \
	  $(PY) -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
	  -w $(MMCV_WHEELS) mmcv==2.1.0
	$(PY) -m pip install --disable-pip-version-check --no-index --no-deps --force-reinstall \
	  --find-links $(MMCV_WHEELS) mmcv==2.1.0
	$(PY) tools/misc/check_env.py mmcv
	@touch $@

$(VENV)/.stamp-mmhybrid: $(VENV)/.stamp-mmcv requirements/runtime.txt requirements/tests.txt requirements/deploy.txt setup.py
	PIP_FIND_LINKS="$(WHEELHOUSE)" $(PIP) -r requirements/runtime.txt -r requirements/tests.txt -r requirements/deploy.txt
	PIP_FIND_LINKS="$(WHEELHOUSE)" $(PIP) --no-build-isolation --no-deps -e .
	$(PY) tools/misc/check_env.py all
	@touch $@

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest tests -n auto

test-serial: install
	$(PY) -m pytest tests

test-fast: install
	$(PY) -m pytest tests -n auto -m "not slow"

clean-venv:
	rm -rf $(VENV)
