#!/usr/bin/env bash
# Sets up a bare machine for streamrec: a virtualenv with the project, Java 17 + Maven for the local
# Kafka, redis-server, and the Kafka jars. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() {
  command -v apt-get >/dev/null || return 1
  say "installing $* from Debian packages"
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq && APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. Python 3.11+
PY=""
for cand in python3.13 python3.12 python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then
    PY=$cand; break
  fi
done
[ -n "$PY" ] || { say "Python 3.11 or newer is needed"; exit 1; }

# 2. virtualenv with the project (re-installed when pyproject.toml changes)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv || { apt_install python3-venv && "$PY" -m venv .venv; }
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing streamrec and its dependencies into .venv (first run takes a minute)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi

# 3. Java 17 + Maven for Kafka (not needed when Docker runs the stack)
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  apt_install openjdk-17-jre-headless maven || say "install Java 17 and Maven, or use Docker (docker compose up)"
fi

# 4. redis-server
command -v redis-server >/dev/null || apt_install redis-server || say "install redis-server (apt-get install redis-server)"

# 4b. promtool (Debian's prometheus package) for the tests that check deploy/prometheus and the dashboard
command -v promtool >/dev/null || apt_install prometheus || say "install promtool (apt-get install prometheus)"

# 4c. Debian's Chromium for the storefront's browser test (Playwright drives it; it never downloads a browser)
[ -x /usr/bin/chromium ] || apt_install chromium || say "install chromium (apt-get install chromium) for tests/browser"

# 5. Kafka jars from Maven Central (once)
if ! ls .stack/kafka-libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  say "fetching Apache Kafka jars from Maven Central into .stack/kafka-libs"
  mvn -q -B -f stack/pom.xml dependency:copy-dependencies
fi
say "ready: $(.venv/bin/python --version), $(java -version 2>&1 | head -1), $(redis-server --version | cut -d' ' -f1-3)"
