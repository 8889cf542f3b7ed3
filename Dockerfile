# benchlink: the cloud API (and, with another command, the edge daemon and the simulator).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and the packages first, so that a change to bin/ or docs does not reinstall.
COPY pyproject.toml README.md ./
COPY common ./common
COPY hardware ./hardware
COPY cloud ./cloud
COPY edge ./edge
RUN pip install .

COPY bin ./bin

# Not root: the API needs no privileges; the edge needs the dialout group for real serial
# ports and a state directory for its buffer.
RUN useradd --system --uid 10001 --gid nogroup --groups dialout --home-dir /var/lib/benchlink \
        benchlink \
    && mkdir -p /var/lib/benchlink \
    && chown benchlink /var/lib/benchlink
USER benchlink

EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/healthz', timeout=3)"]
CMD ["benchlink-cloud", "serve", "--host", "0.0.0.0", "--port", "8002"]
