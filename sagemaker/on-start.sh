#!/bin/bash
# SageMaker notebook instance lifecycle configuration, "Start notebook" script for pneumotype.
#
# A start resets everything outside /home/ec2-user/SageMaker: the Jupyter kernel registry and ~/.bashrc among it.
# This re-registers the tslab kernel and Node.js on the shells' PATH (a few seconds), or, when on-create.sh's
# install has not finished (first boot, or an install that failed), resumes it in the background (nohup).
# It never fails the start: problems are logged to /home/ec2-user/SageMaker/.pneumotype/setup.log.
set -uo pipefail

PERSIST=/home/ec2-user/SageMaker
STATE="$PERSIST/.pneumotype"

if [ ! -x "$STATE/setup.sh" ]; then
  echo "pneumotype: $STATE/setup.sh is missing: attach on-create.sh as the Create script (or run it once as root)"
  exit 0
fi

if [ -f "$STATE/installed" ]; then
  sudo -u ec2-user -i <<EOF
timeout 120 "$STATE/setup.sh" kernel >> "$STATE/setup.log" 2>&1 || echo "pneumotype: kernel registration failed; see $STATE/setup.log"
EOF
else
  sudo -u ec2-user -i <<EOF
nohup "$STATE/setup.sh" install >> "$STATE/setup.log" 2>&1 &
EOF
  echo "pneumotype: install resumed in the background; see $STATE/setup.log"
fi
exit 0
