# The chat process group in one container: supervisord runs CHAT_PROCESSES
# chat processes on ports CHAT_BASE_PORT, CHAT_BASE_PORT+1, ... (see
# supervisord.conf). docker-compose.yml puts nginx, MongoDB and Redis around it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY chat/ chat/
COPY templates/ templates/
COPY static/ static/
COPY supervisord.conf .

RUN useradd --system --uid 10001 --home-dir /app chat \
    && mkdir -p /app/var/log \
    && chown -R chat /app/var
USER chat

# Listen on all interfaces inside the container: nginx reaches the processes
# by service name, from another container. Only the compose network can reach
# these ports (they are not published), and only it is trusted to forward
# client addresses (CHAT_TRUSTED_PROXIES in docker-compose.yml). Logs go to
# files under /app/var/log (mount it to keep them).
ENV CHAT_PROCESSES=2 \
    CHAT_BASE_PORT=8001 \
    CHAT_RUN_DIR=/app/var \
    CHAT_PYTHON=/usr/local/bin/python \
    CHAT_HOST=0.0.0.0
EXPOSE 8001 8002

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"CHAT_BASE_PORT\"]}/healthz', timeout=2)"

CMD ["supervisord", "-n", "-c", "/app/supervisord.conf"]
