#!/usr/bin/env bash
# System packages the test suite uses: Debian's Chromium (browser end-to-end test), CJK fonts (readable
# screenshots), docker-compose (validates docker-compose.yml without a Docker engine) and PostgreSQL (the
# feedback tests initdb a throw-away server in a temp dir; only its binaries are used).
# Installs what is missing when we may (root with apt-get); otherwise says what to install.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fc-list 2>/dev/null | grep -qi "wqy" || missing+=(fonts-wqy-microhei fonts-noto-color-emoji)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
