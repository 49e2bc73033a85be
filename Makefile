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

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.atelier-installed

.PHONY: run test install demo clean-data

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

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
