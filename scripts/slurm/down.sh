#!/usr/bin/env bash
# scripts/slurm/down.sh [RECORD]: stops what scripts/slurm/up.sh [RECORD] started (the pids it
# recorded there), newest first; nothing else.
set -uo pipefail

STATE=${DRSOM_SLURM_STATE:-/var/tmp/drsom-slurm}
RECORD=${1:-$STATE/started}
[ -s "$RECORD" ] || { echo "slurm-down: nothing started by up.sh"; exit 0; }
tac "$RECORD" | while read -r name pid; do
    # The pid must still be that daemon: never signal a process that reused the number.
    if [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$name" ]; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "slurm-down: stopped $name (pid $pid)"
    fi
done
: >"$RECORD"
