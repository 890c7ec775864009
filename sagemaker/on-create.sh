#!/bin/bash
# SageMaker notebook instance lifecycle configuration, "Create notebook" script for pneumotype.
#
# Installs Node.js 20 (nvm), the project and the tslab TypeScript kernel into /home/ec2-user/SageMaker, the only
# folder that survives a stop/start. SageMaker runs this as root, once, and fails the instance when it takes more
# than 5 minutes, so it only writes the installer and starts it in the background (nohup); follow it with
#   tail -f /home/ec2-user/SageMaker/.pneumotype/setup.log
# on-start.sh re-registers the kernel and PATH at every start and resumes an unfinished install.
# Edit PROJECT_DIR / PROJECT_REPO below: with no repository, the project is expected at PROJECT_DIR (for instance
# the instance's default Git repository, cloned by SageMaker under /home/ec2-user/SageMaker).
set -uo pipefail

PERSIST=/home/ec2-user/SageMaker
STATE="$PERSIST/.pneumotype"
PROJECT_DIR="$PERSIST/pneumotype"
PROJECT_REPO=""   # e.g. https://github.com/OWNER/pneumotype.git; empty: use PROJECT_DIR as it is
INSTALL_GPU=auto  # auto (when nvidia-smi sees a GPU) | yes | no: CUDA 11.2 + cuDNN 8.1 and @tensorflow/tfjs-node-gpu

mkdir -p "$STATE"
# Kept when there (run again, this script only upgrades setup.sh): delete it to apply new settings.
if [ ! -f "$STATE/config.sh" ]; then
  { echo "# Written by on-create.sh; read by setup.sh."
    printf 'PERSIST=%q\nSTATE=%q\nPROJECT_DIR=%q\nPROJECT_REPO=%q\nINSTALL_GPU=%q\n' \
      "$PERSIST" "$STATE" "$PROJECT_DIR" "$PROJECT_REPO" "$INSTALL_GPU"
  } > "$STATE/config.sh"
fi

cat > "$STATE/setup.sh" <<'SETUP'
#!/bin/bash
# pneumotype's installer on a SageMaker notebook instance (written by on-create.sh). Runs as ec2-user.
#   setup.sh install   Node.js 20 (nvm), the project (npm ci), optionally the GPU packages, tslab, then `kernel`
#   setup.sh kernel    registers the tslab kernel with the instance's Jupyter and Node.js on the shell PATH (fast)
# Every step is skipped when already done, so it can be re-run after a failure or an interrupted start. "Done" is a
# stamp file in $STATE written after the step succeeded (never the presence of a folder, which a step that was cut
# off leaves behind too); a step without its stamp is done again, over or instead of what it left.
set -uo pipefail
STATE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$STATE/config.sh"
export NVM_DIR="$PERSIST/.nvm"
NVM_VERSION=v0.40.1
NODE_MAJOR=20
JUPYTER_PYTHON=/home/ec2-user/anaconda3/envs/JupyterSystemEnv/bin/python
CONDA=/home/ec2-user/anaconda3/bin/conda
CUDA_ENV="$PERSIST/envs/cuda112"

log() { echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] $*"; }
die() { log "FAILED: $*"; exit 1; }

# Step stamps: $STATE/STEP.done, written once the step has succeeded.
step_done() { [ -f "$STATE/$1.done" ]; }
mark_done() { touch "$STATE/$1.done"; }
undo_step() { rm -f "$STATE/$1.done"; }

# nvm reads unset variables: it runs with nounset off, which is turned on again after it.
nvm_() {
  local rc
  set +u
  nvm "$@"
  rc=$?
  set -u
  return "$rc"
}

use_node() {
  [ -s "$NVM_DIR/nvm.sh" ] || return 1
  local rc
  set +u
  # shellcheck disable=SC1091
  . "$NVM_DIR/nvm.sh" --no-use
  rc=$?
  set -u
  [ "$rc" -eq 0 ] || return 1
  if [ "$(glibc_ok)" = no ]; then
    # Amazon Linux 2 has glibc 2.26; nodejs.org's Node 20 needs 2.28: use the unofficial glibc-2.17 builds.
    export NVM_NODEJS_ORG_MIRROR=https://unofficial-builds.nodejs.org/download/release
    nvm_get_arch() { nvm_echo x64-glibc-217; }
  fi
  nvm_ use --silent "$NODE_MAJOR" >/dev/null 2>&1
}

glibc_ok() {
  local v
  v="$(ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+$')"
  if [ -n "$v" ] && [ "$(printf '%s\n2.28\n' "$v" | sort -V | head -n1)" != 2.28 ]; then echo no; else echo yes; fi
}

gpu_wanted() {
  case "$INSTALL_GPU" in
    yes) return 0 ;;
    no) return 1 ;;
    *) nvidia-smi -L >/dev/null 2>&1 ;;
  esac
}

fetch_nvm() {
  curl -fsSL "https://raw.githubusercontent.com/nvm-sh/nvm/$NVM_VERSION/install.sh" | PROFILE=/dev/null bash
}

install_node() {
  if ! step_done nvm || [ ! -s "$NVM_DIR/nvm.sh" ]; then
    log "installing nvm $NVM_VERSION into $NVM_DIR"
    mkdir -p "$NVM_DIR"
    if ! fetch_nvm; then
      # nvm's installer updates what it finds; what an install cut off left may stop it: then it starts afresh.
      log "nvm's installer failed on what $NVM_DIR holds: removing it and installing nvm afresh"
      undo_step node
      undo_step tslab
      rm -rf "$NVM_DIR"
      mkdir -p "$NVM_DIR"
      fetch_nvm || die "nvm install"
    fi
    mark_done nvm
  fi
  use_node || true
  if ! step_done node || ! nvm_ which "$NODE_MAJOR" >/dev/null 2>&1; then
    # A Node.js copied in part (an install cut off) may look installed to nvm: its folder goes first.
    undo_step tslab
    nvm_ deactivate >/dev/null 2>&1
    rm -rf "$NVM_DIR/versions/node/v$NODE_MAJOR".*
    log "installing Node.js $NODE_MAJOR"
    nvm_ install "$NODE_MAJOR" || die "nvm install $NODE_MAJOR"
    nvm_ alias default "$NODE_MAJOR" >/dev/null || die "nvm alias default $NODE_MAJOR"
    mark_done node
  fi
  use_node || die "Node.js $NODE_MAJOR does not start"
  log "node $(node --version), npm $(npm --version)"
}

install_project() {
  if [ ! -f "$PROJECT_DIR/package.json" ]; then
    if [ -n "$PROJECT_REPO" ]; then
      # A folder without package.json is no project (a clone cut off, say): git clone refuses a non-empty folder, so
      # it is moved aside (kept: it may hold work), or removed when empty.
      if [ -e "$PROJECT_DIR" ] && ! rmdir "$PROJECT_DIR" 2>/dev/null; then
        local aside
        aside="$PROJECT_DIR.partial-$(date -u +%Y%m%dT%H%M%SZ)"
        log "$PROJECT_DIR has no package.json: moving it aside to $aside"
        mv "$PROJECT_DIR" "$aside" || die "mv $PROJECT_DIR $aside"
      fi
      # Cloned beside it, then renamed: PROJECT_DIR appears only complete.
      local tmp="$PROJECT_DIR.cloning"
      rm -rf "$tmp"
      log "cloning $PROJECT_REPO into $PROJECT_DIR"
      git clone "$PROJECT_REPO" "$tmp" || die "git clone"
      mv -T "$tmp" "$PROJECT_DIR" || die "mv $tmp $PROJECT_DIR"
    else
      log "waiting for $PROJECT_DIR/package.json (the instance's Git repository is cloned at start)"
      for _ in $(seq 60); do [ -f "$PROJECT_DIR/package.json" ] && break; sleep 5; done
      [ -f "$PROJECT_DIR/package.json" ] || die "no project at $PROJECT_DIR: set PROJECT_REPO or PROJECT_DIR in on-create.sh"
    fi
  fi
  cd "$PROJECT_DIR" || die "cd $PROJECT_DIR"
  local stamp
  stamp="$(sha256sum package.json package-lock.json 2>/dev/null | sha256sum | cut -c1-64)"
  # project.stamp: the hashes of package.json and package-lock.json that npm ci last completed for.
  if [ -d node_modules ] && [ "$(cat "$STATE/project.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "project dependencies are up to date"
  else
    rm -f "$STATE/project.stamp"
    undo_step tfjs-node-gpu # npm ci replaces node_modules, the GPU package (installed without --save) with it
    log "installing the project's dependencies (npm ci; its postinstall sets TensorFlow up and builds dist/)"
    if [ -f package-lock.json ]; then npm ci || die "npm ci"; else npm install || die "npm install"; fi
    echo "$stamp" > "$STATE/project.stamp"
  fi
}

# The GPU steps come after the kernel is registered, and a failure in them is logged, not fatal: the notebooks then
# run on the CPU, and the next start (on-start.sh resumes an install not marked done) or setup.sh install tries again.
gpu_failed() { log "$*: the notebooks use the CPU (see npx pneumotype doctor); $STATE/setup.sh install tries again"; return 1; }

install_gpu() {
  gpu_wanted || return 0
  cd "$PROJECT_DIR" || return 1
  if ! step_done cuda-env; then
    # A conda create that was cut off leaves a prefix conda may refuse or take as done: it goes first.
    rm -rf "$CUDA_ENV"
    log "creating $CUDA_ENV with CUDA 11.2 and cuDNN 8.1 (what @tensorflow/tfjs-node-gpu 4.22 is built against)"
    "$CONDA" create -y -q -p "$CUDA_ENV" --override-channels -c conda-forge cudatoolkit=11.2 cudnn=8.1 || gpu_failed "conda create $CUDA_ENV failed" || return 1
    mark_done cuda-env
  fi
  # Without these, tfjs-node-gpu loads and trains on the CPU without a word.
  for l in libcudart.so.11.0 libcudnn.so.8; do [ -e "$CUDA_ENV/lib/$l" ] || { undo_step cuda-env; undo_step tfjs-node-gpu; gpu_failed "$CUDA_ENV/lib has no $l"; return 1; }; done
  export LD_LIBRARY_PATH="$CUDA_ENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ! step_done tfjs-node-gpu || [ ! -d node_modules/@tensorflow/tfjs-node-gpu ]; then
    undo_step tfjs-node-gpu
    rm -rf node_modules/@tensorflow/tfjs-node-gpu # what an install cut off left
    log "installing @tensorflow/tfjs-node-gpu"
    npm install --no-save @tensorflow/tfjs-node-gpu@4.22.0 || gpu_failed "npm install @tensorflow/tfjs-node-gpu failed" || return 1
    # Exit status 3: installed, but its binding does not load (CUDA, the driver): not marked done.
    PNEUMOTYPE_REQUIRE_GPU=1 node scripts/setup-tfjs.mjs || gpu_failed "the GPU package is not ready" || return 1
    mark_done tfjs-node-gpu
  fi
}

install_tslab() {
  if ! step_done tslab || [ ! -x "$(dirname "$(nvm_ which "$NODE_MAJOR")")/tslab" ]; then
    log "installing tslab (npm install -g, inside the persistent nvm folder)"
    npm install -g tslab || die "npm install -g tslab"
    mark_done tslab
  fi
}

register_kernel() {
  use_node || die "Node.js is not installed yet: run $STATE/setup.sh install"
  local bin
  bin="$(dirname "$(nvm_ which "$NODE_MAJOR")")"
  [ -x "$bin/tslab" ] || die "tslab is not installed yet: run $STATE/setup.sh install"
  # Jupyter starts kernels without nvm on its PATH: a small wrapper supplies Node.js (and CUDA 11.2 when present).
  cat > "$STATE/tslab-kernel" <<EOF
#!/bin/bash
export PATH="$bin:\$PATH"
export NVM_DIR="$NVM_DIR"
[ -f "$STATE/cuda-env.done" ] && export LD_LIBRARY_PATH="$CUDA_ENV/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# With the GPU package ready the notebooks train the gpu preset, as npm start does (unless PNEUMOTYPE_PRESET says otherwise).
[ -f "$STATE/tfjs-node-gpu.done" ] && export PNEUMOTYPE_PRESET="\${PNEUMOTYPE_PRESET:-gpu}"
exec "$bin/tslab" "\$@"
EOF
  chmod +x "$STATE/tslab-kernel"
  "$bin/tslab" install --python="$JUPYTER_PYTHON" --binary="$STATE/tslab-kernel" --user || die "tslab install"
  # Shells (Jupyter terminals, ssh) get Node.js too; .bashrc is outside the persistent volume, so this runs at each start.
  if ! grep -q 'pneumotype: Node.js' "$HOME/.bashrc" 2>/dev/null; then
    cat >> "$HOME/.bashrc" <<EOF

# pneumotype: Node.js $NODE_MAJOR from the persistent volume (written by the lifecycle configuration)
export NVM_DIR="$NVM_DIR"
[ -s "\$NVM_DIR/nvm.sh" ] && . "\$NVM_DIR/nvm.sh"
[ -f "$STATE/cuda-env.done" ] && export LD_LIBRARY_PATH="$CUDA_ENV/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
  fi
  log "tslab kernel registered (TypeScript and JavaScript) for $JUPYTER_PYTHON"
}

# One installer at a time: on the first boot, on-start.sh runs while on-create.sh's install is still going.
exec 9>"$STATE/setup.lock"
if ! flock -n 9; then
  log "another setup.sh is running; leaving it to finish"
  exit 0
fi
case "${1:-install}" in
  install)
    log "pneumotype setup: start"
    rm -f "$STATE/installed" # an install that stops half-way is not one that finished
    install_node
    install_project
    install_tslab
    register_kernel
    if install_gpu; then
      touch "$STATE/installed"
      log "pneumotype setup: done"
    else
      # Not marked installed: the next start resumes the install in the background and tries the GPU steps again.
      log "pneumotype setup: done except the GPU steps (above); the kernel runs on the CPU until they succeed"
    fi
    ;;
  kernel) register_kernel ;;
  *) die "usage: setup.sh [install|kernel]" ;;
esac
SETUP

chmod +x "$STATE/setup.sh"
chown -R ec2-user:ec2-user "$STATE"

# The long part (downloads, npm ci, conda) in the background, as ec2-user, logging to a file.
sudo -u ec2-user -i <<EOF
nohup "$STATE/setup.sh" install >> "$STATE/setup.log" 2>&1 &
EOF
echo "pneumotype: installing in the background; see $STATE/setup.log"
exit 0
