# The gateway alone; docker-compose.yml runs it beside PostgreSQL, MongoDB and Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN useradd --system --create-home --home-dir /home/gateway gateway

COPY pyproject.toml README.md alembic.ini schema.graphql ./
COPY alembic ./alembic
COPY gateway ./gateway
COPY core ./core
COPY resolvers ./resolvers
COPY planner ./planner
COPY datasources ./datasources
# Editable, so that the migrations under /app/alembic stay beside the code that runs them.
RUN pip install -e .

USER gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
CMD ["sh", "-c", "gateway migrate upgrade && exec gateway serve"]
