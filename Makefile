# Two commands on a fresh machine with only Python 3.11: `make run`, `make test`.
# uv is bootstrapped into ./tools (hash-checked); everything else installs from uv.lock into ./.venv.

PYTHON ?= python3
UV := tools/bin/uv
VENV := .venv

.PHONY: run test bench install clean

# Local runs use var/gateway.yaml (not committed): a `demo` tenant and a key kept in var/demo.key.
DEMO_CONFIG := var/gateway.yaml

run: install $(DEMO_CONFIG)
	@echo "Starting the gateway (LiteLLM on 127.0.0.1:$${GATEWAY_LITELLM_PORT:-4000}, wrapper on 127.0.0.1:$${GATEWAY_PORT:-8080})."
	@echo "Demo key: $$(cat var/demo.key)"
	@echo "Try:  curl -s localhost:$${GATEWAY_PORT:-8080}/v1/chat/completions -H \"authorization: Bearer $$(cat var/demo.key)\" -H 'content-type: application/json' -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
	GATEWAY_CONFIG=$(DEMO_CONFIG) $(VENV)/bin/gateway up

$(DEMO_CONFIG):
	@mkdir -p var
	$(VENV)/bin/gateway --config $@.new tenants add demo --display-name "Local demo" >/dev/null
	$(VENV)/bin/gateway --config $@.new keys create --tenant demo --name local-demo | tail -n 1 > var/demo.key
	@mv $@.new $@

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python bench/hot_path.py
	$(VENV)/bin/python bench/overhead.py
	$(VENV)/bin/python bench/audit_store.py
	$(VENV)/bin/python bench/pii.py
	$(VENV)/bin/python bench/fuzz.py
	$(VENV)/bin/python bench/limits.py
	$(VENV)/bin/python bench/limits_proof.py
	$(VENV)/bin/python bench/routing_classifier.py
	$(VENV)/bin/python bench/hedging.py
	$(VENV)/bin/python bench/cache.py
	$(VENV)/bin/python bench/cache_accuracy.py
	$(VENV)/bin/python bench/cache_isolation.py
	$(VENV)/bin/python bench/guardrails.py
	$(VENV)/bin/python bench/guardrails_injection.py
	$(VENV)/bin/python bench/chaos.py
	$(VENV)/bin/python bench/soak.py

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
