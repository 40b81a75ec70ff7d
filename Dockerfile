# The sandmeter image: every service is `sandmeter <command>` (docker-compose.yml).
# Pin the base by digest for reproducible builds (docker buildx imagetools inspect
# python:3.11-slim-bookworm); the tag alone moves with Debian and Python patch releases.
FROM python:3.11-slim-bookworm AS build
# the kata-monitor scan is a C extension (collectors/_expfmt.c): compiled here, into a wheel,
# so the image that runs has no compiler
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
# every package pyproject.toml's [tool.setuptools.packages.find] installs (a test checks)
COPY contracts contracts
COPY collectors collectors
COPY pipeline pipeline
COPY scaling scaling
COPY billing billing
COPY dashboards dashboards
COPY sandmeter sandmeter
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# unbuffered: the one-line status and error lines reach `docker logs` at once, not per 4 KiB
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -r /wheels \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sandmeter
USER 10001:10001
ENTRYPOINT []
CMD ["sandmeter", "--help"]
