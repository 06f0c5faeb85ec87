# One image for every streamrec process (worker, api, batch, simulate); the command picks the process.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
COPY models ./models
COPY batch ./batch
COPY stream_processors ./stream_processors
COPY online_api ./online_api
COPY ops ./ops
RUN pip install --no-cache-dir .
RUN useradd --create-home streamrec && mkdir -p /data && chown streamrec /data
USER streamrec
ENV STREAMREC_BATCH_SNAPSHOT_DIR=/data/snapshot
ENTRYPOINT ["streamrec"]
CMD ["--help"]
