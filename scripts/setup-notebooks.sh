#!/usr/bin/env bash
# Installs what the notebooks need, idempotently: nbconvert in .venv-notebooks and the tslab kernel registered there.
#
# Nothing global is touched: Jupyter lives in a virtual environment beside the checkout (PNEUMOTYPE_NOTEBOOK_VENV to
# put it elsewhere) and the kernel spec goes into that environment, pointing at this checkout's node_modules/.bin/tslab
# (a devDependency). A second run checks and does nothing. To open the notebooks interactively, add JupyterLab to the
# same environment: .venv-notebooks/bin/pip install jupyterlab && .venv-notebooks/bin/jupyter lab notebooks/
set -euo pipefail
log() { echo "[pneumotype notebooks] $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PNEUMOTYPE_NOTEBOOK_VENV:-$ROOT/.venv-notebooks}"
PYTHON="${PNEUMOTYPE_PYTHON:-python3}"
TSLAB="$ROOT/node_modules/.bin/tslab"
PACKAGES=('nbconvert>=7,<8' 'nbclient' 'jupyter_client' 'ipython')

if [ ! -x "$TSLAB" ]; then
  log "node_modules/.bin/tslab is missing: run \`npm install\` first (tslab is a devDependency)"
  exit 1
fi

if ! "$VENV/bin/python" -c 'import nbconvert, nbclient, jupyter_client, IPython' >/dev/null 2>&1; then
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating the virtual environment $VENV"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian's python3-venv (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        "$PYTHON" -m venv "$VENV"
      else
        log "\`$PYTHON -m venv\` failed: install python3-venv (or set PNEUMOTYPE_PYTHON to a Python 3 that has venv)"
        exit 1
      fi
    fi
  fi
  # A venv cut short while it was being made can lack pip: put it back (ensurepip), or make the venv again.
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "$VENV has no pip: repairing it"
    if ! "$VENV/bin/python" -m ensurepip --upgrade >/dev/null 2>&1; then
      rm -rf "$VENV"
      "$PYTHON" -m venv "$VENV"
    fi
  fi
  log "installing ${PACKAGES[*]} into $VENV (pip)"
  PIP_LOG="$(mktemp)"
  # --retries 0: an index that cannot be reached is skipped at once instead of after minutes of back-off.
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --retries 0 --timeout 30 "${PACKAGES[@]}" >"$PIP_LOG" 2>&1; then
    tail -n 30 "$PIP_LOG" >&2
    rm -f "$PIP_LOG"
    log "pip could not install ${PACKAGES[*]}"
    exit 1
  fi
  rm -f "$PIP_LOG"
fi

KERNEL_JSON="$VENV/share/jupyter/kernels/tslab/kernel.json"
if ! grep -qF "\"$TSLAB\"" "$KERNEL_JSON" 2>/dev/null; then
  log "registering the tslab kernel in $VENV"
  "$TSLAB" install --python="$VENV/bin/python" --sys-prefix --binary="$TSLAB" >/dev/null
fi
if ! grep -qF "\"$TSLAB\"" "$KERNEL_JSON" 2>/dev/null; then
  log "the tslab kernel spec $KERNEL_JSON was not written"
  exit 1
fi
