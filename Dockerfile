# The project's one image: consumer, API and simulator are `leaderboard <subcommand>` (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependency metadata first, then the sources; constraints.txt pins the versions the tests ran with.
COPY pyproject.toml constraints.txt README.md ./
COPY leaderboard ./leaderboard
COPY consumers ./consumers
COPY producers ./producers
COPY query_api ./query_api
COPY schemas ./schemas
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --no-create-home leaderboard

USER leaderboard
# In a container the API and the consumer health port must listen beyond loopback.
ENV LEADERBOARD_API_HOST=0.0.0.0
EXPOSE 8000 9400
ENTRYPOINT ["leaderboard"]
CMD ["--help"]
