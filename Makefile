# Two commands on a fresh machine with only Python 3.11: `make run`, `make test`.
# uv is bootstrapped into ./tools (hash-checked); everything else installs from uv.lock into ./.venv.

PYTHON ?= python3
UV := tools/bin/uv
VENV := .venv

.PHONY: run test bench install clean

run: install
	@echo "Starting the gateway (LiteLLM on 127.0.0.1:$${GATEWAY_LITELLM_PORT:-4000}, wrapper on 127.0.0.1:$${GATEWAY_PORT:-8080})."
	@echo "Try:  curl -s localhost:$${GATEWAY_PORT:-8080}/v1/chat/completions -H 'content-type: application/json' -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
	$(VENV)/bin/gateway up

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python bench/overhead.py

install: $(VENV)/.installed

$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

$(UV): tools-uv.txt
	$(PYTHON) -m venv tools
	tools/bin/pip install --quiet --require-hashes -r tools-uv.txt
	@touch $@

clean:
	rm -rf $(VENV) tools var .pytest_cache
