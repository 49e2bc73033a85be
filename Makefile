# The two commands in README.md: `make run` and `make test`. Both build the
# project's virtual environment themselves (once; again when pyproject.toml changes).

PYTHON  ?= python3
VENV    ?= .venv
PORT    ?= 8000
WORKERS ?= 1
# CPU machines take the torch wheel that lies on disk. On a GPU machine pass the CUDA
# build instead, e.g. `make run TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`
# and add xformers with EXTRAS=test,gpu.
TORCH_SPEC ?= torch==2.13.0
EXTRAS  ?= test
TEST_PROCESSES ?= 2

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.atelier-installed

.PHONY: run test install demo clean-data fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py make_tiny_model
	$(PY) manage.py bootstrap_demo

run: demo
	$(PY) manage.py serve --port $(PORT) --workers $(WORKERS)

# Two test processes by default (pytest-xdist): every test module that runs a platform goes to one
# process, in order, as before; the other modules run in the second, beside it (tests/conftest.py,
# `pytest_xdist_make_scheduler`, says why). TEST_PROCESSES=0 runs everything in this process.
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadscope $(PYTEST_ARGS)

# The Schemathesis run of tests/e2e/test_api_fuzz.py at length: every phase (the coverage phase's
# boundary values and the stateful phase too), 200 examples per operation. CI runs a short one.
fuzz: $(STAMP)
	ATELIER_FUZZ_PHASES=examples,coverage,fuzzing,stateful ATELIER_FUZZ_EXAMPLES=$${ATELIER_FUZZ_EXAMPLES:-200} \
		$(PY) -m pytest tests/e2e/test_api_fuzz.py -p no:randomly -k "not docs" $(PYTEST_ARGS)
