# The gateway's image: `gateway up` runs the wrapper (:8080) and LiteLLM (127.0.0.1:4000) as a pair.
# helm/ runs it as one pod; the install is the lock file's, hash-checked, without the test tools.
FROM python:3.11-slim AS build
WORKDIR /app
COPY tools-uv.txt ./
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --quiet --require-hashes -r tools-uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY wrapper wrapper
COPY custom_callbacks custom_callbacks
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable --python /usr/local/bin/python3.11

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home gateway && mkdir -p /var/lib/gateway && chown gateway /var/lib/gateway
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 GATEWAY_VAR_DIR=/var/lib/gateway GATEWAY_HOST=0.0.0.0
USER 10001
WORKDIR /var/lib/gateway
EXPOSE 8080
CMD ["gateway", "up", "--config", "/etc/gateway/gateway.yaml", "--litellm-config", "/etc/gateway/litellm_config.yaml"]
