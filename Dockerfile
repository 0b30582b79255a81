# Production image: non-root, uvicorn via `gateway serve`, healthcheck on /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8080 \
    GATEWAY_POLICY_PATH=/app/config/policies.yaml \
    GATEWAY_DATABASE_URL=sqlite:////data/gateway.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policies ./policies
COPY storage ./storage
COPY config ./config
RUN pip install '.[postgres,redis,otel]' \
    && useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /data && chown gateway /data

USER gateway
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"GATEWAY_PORT\"]}/healthz', timeout=2)"
CMD ["gateway", "serve"]
