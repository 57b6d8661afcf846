.PHONY: test quick lint app setup

# The project's virtual environment when scripts/setup.sh made one, else the python3 on PATH (CI).
PY := $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)

setup:
	bash scripts/setup.sh

lint:
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q

# the inner loop: every test not marked slow (`make test` runs them all)
quick:
	$(PY) -m pytest -q -m "not slow"

app:
	$(PY) -m streamlit run app/main.py
