#!/usr/bin/env bash
# Installs the Debian packages the local stack needs, only those missing.
set -euo pipefail
need=()
command -v clickhouse-server >/dev/null || need+=(clickhouse-server)
command -v clickhouse-client >/dev/null || need+=(clickhouse-client)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
# Debian calls Alertmanager prometheus-alertmanager; amtool comes with it
command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null || need+=(prometheus-alertmanager)
# the local ClickHouse cluster's coordinator (`sandmeter stack up --cluster`); pulls in its JRE
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
command -v java >/dev/null || need+=(default-jre-headless)
command -v docker-compose >/dev/null || need+=(docker-compose)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# the kata-monitor scan is a C extension (collectors/_expfmt.c), built when the project installs
command -v gcc >/dev/null || need+=(gcc)
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
  2>/dev/null || need+=(python3-dev)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
