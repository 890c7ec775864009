#!/usr/bin/env bash
# Installs the system packages the test suite needs, idempotently: Debian's Chromium for the browser tests of reports.
# Runs as npm's `pretest`; without root or apt-get it says what is missing and the browser tests skip with a reason.
set -euo pipefail
log() { echo "[pneumotype setup] $*" >&2; }
if [ -n "${PNEUMOTYPE_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing Debian's chromium for the browser tests (apt-get)"
  # Never fatal: without Chromium only the browser tests skip (offline, a held dpkg lock, a distribution without it).
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    log "apt-get could not install chromium: the browser tests will be skipped (PNEUMOTYPE_CHROMIUM=/path/to/chromium to use another)"
  fi
else
  log "no Chromium at /usr/bin/chromium and no root to install it: the browser tests will be skipped (apt-get install chromium)"
fi
