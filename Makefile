# The README's two commands are `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench man clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: venv
	$(BIN)/python -m doveadm_py.testing.demo

lint: venv
	$(BIN)/ruff check doveadm_py plugins tests bench
	$(BIN)/ruff format --check doveadm_py plugins tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate the man pages from the commands' parsers and doveadm_py/manual.py (a test checks them).
man: venv
	$(BIN)/python -m doveadm_py.manual man
	PYTHONPATH=plugins/dvadm-penalty $(BIN)/python -m doveadm_py.manual plugins/dvadm-penalty/man \
		penalty=dvadm_penalty.command:Penalty
	PYTHONPATH=plugins/dvadm-proxy $(BIN)/python -m doveadm_py.manual plugins/dvadm-proxy/man \
		"proxy list=dvadm_proxy.command:ProxyList" "proxy kick=dvadm_proxy.command:ProxyKick"

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
