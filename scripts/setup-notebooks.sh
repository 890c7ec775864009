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
    # Made in a new folder, or in an empty one or a venv cut short (pyvenv.cfg); never in a folder with other things in
    # it (PNEUMOTYPE_NOTEBOOK_VENV naming someone's folder), and only a folder made here is removed when venv fails.
    CREATED=0
    if [ ! -e "$VENV" ] && [ ! -L "$VENV" ]; then
      CREATED=1
    elif [ ! -d "$VENV" ] || { [ ! -f "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV" 2>/dev/null || echo unreadable)" ]; }; then
      log "$VENV exists and is neither a virtual environment (no pyvenv.cfg) nor an empty folder: not touching it;" \
        "set PNEUMOTYPE_NOTEBOOK_VENV to a new or empty folder, or remove it"
      exit 1
    fi
    log "creating the virtual environment $VENV"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
      if [ "$CREATED" = 1 ]; then
        rm -rf "$VENV"
      fi
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
  # A venv cut short while it was being made can lack pip: put it back (ensurepip), or run venv over it again (which
  # keeps what is installed; a folder that is not a venv is left alone).
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "$VENV has no pip: repairing it"
    if ! "$VENV/bin/python" -m ensurepip --upgrade >/dev/null 2>&1; then
      if [ ! -f "$VENV/pyvenv.cfg" ]; then
        log "$VENV has a bin/python without pip and is not a virtual environment (no pyvenv.cfg): not touching it;" \
          "set PNEUMOTYPE_NOTEBOOK_VENV to a new or empty folder"
        exit 1
      fi
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
# The spec runs this checkout's tslab: argv[0] parsed, not the raw text (tslab writes it with Python's json.dump, which
# escapes a non-ASCII path: /home/zoë as /home/zo\u00eb).
kernel_ok() {
  "$VENV/bin/python" -c 'import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    sys.exit(0 if json.load(f)["argv"][0] == sys.argv[2] else 1)' "$KERNEL_JSON" "$TSLAB" >/dev/null 2>&1
}
if ! kernel_ok; then
  log "registering the tslab kernel in $VENV"
  "$TSLAB" install --python="$VENV/bin/python" --sys-prefix --binary="$TSLAB" >/dev/null
fi
if ! kernel_ok; then
  log "the tslab kernel spec $KERNEL_JSON was not written, or does not run $TSLAB"
  exit 1
fi
