FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY sandmeter sandmeter
COPY collectors collectors
COPY pipeline pipeline
COPY billing billing
COPY dashboards dashboards
RUN pip install --no-cache-dir .
ENTRYPOINT []
