# Two commands do all set-up on a fresh machine:
#   make demo   -- create .venv if needed, then run the main job
#   make test   -- create .venv if needed, then run the test suite
# The venv installs torch from constraints-cpu.txt (a CPU wheel): no CUDA packages.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export MPLBACKEND := Agg

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e ".[dev]"
	$(PY) -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sp-dynamics benchmark --system pendulum --preset quick --out runs/meta-quick

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) .pytest_cache runs
