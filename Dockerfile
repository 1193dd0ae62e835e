# kaskad image: one image for the worker (default), the webhook gateway and the sandbox provider.
#
#   docker build -t kaskad .
#   docker run --rm kaskad                       # python worker.py
#   docker run --rm kaskad python -m gateway     # webhook gateway
#   docker run --rm kaskad python -m sandbox     # sandbox provider
#
# Configuration comes from KASKAD_* environment variables (see docker-compose.yml).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KASKAD_DATA_DIR=/data

WORKDIR /app

# Unprivileged runtime user. /data is created here and owned by that user so that a named volume
# mounted on it (kaskad-data in docker-compose.yml) starts out writable for the worker.
RUN groupadd --system --gid 10001 kaskad \
    && useradd --system --uid 10001 --gid kaskad --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin kaskad \
    && mkdir -p /data \
    && chown kaskad:kaskad /data

# Dependencies first, read from pyproject.toml, so that code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (see .dockerignore for what stays out).
COPY . .
RUN pip install . \
    && rm -rf build ./*.egg-info

USER kaskad

# Gateway and sandbox ports (docker-compose.yml publishes them).
EXPOSE 8080 8090

CMD ["python", "worker.py"]
