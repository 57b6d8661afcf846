.PHONY: test lint app setup

setup:
	bash scripts/setup.sh

lint:
	python -m ruff check .

test: lint
	python -m pytest -q

app:
	python -m streamlit run app/main.py
