#!/usr/bin/env bash
# Run the example app on Flower's simulation engine (ray): one SuperLink in simulation mode on
# 127.0.0.1 and NODES simulated SuperNodes, judged by the run's final status.
#
#   bash examples/flower/sim.sh NODES ROUNDS [KEY=VALUE ...]
#
# Needs ray: pip install -e '.[flower-sim]'. Same arguments, ports (FLOWER_PORT), timeout
# (FLOWER_RUN_TIMEOUT), private FLWR_HOME, clean-up and exit status as deploy.sh, which runs the
# same app on separate SuperNode processes without ray; the same online calibration (the table's
# calib, eps and q columns; see deploy.sh).
USAGE="bash examples/flower/sim.sh NODES ROUNDS [KEY=VALUE ...]"
source "$(dirname "${BASH_SOURCE[0]}")/_run_lib.sh"

parse_counts "$@"
shift 2
find_tools
"$PY" -c "import ray" 2>/dev/null ||
  die "the simulation engine needs ray: pip install -e '.[flower-sim]' (deploy.sh needs none)" 2
pick_ports 1
make_home
# Ray's session files (and so its processes' command lines) under this run's directory: the
# clean-up below finds ray's daemons, which leave the process tree, by that path.
export RAY_TMPDIR="$WORK/ray"
mkdir -p "$RAY_TMPDIR"
extra_cleanup() {  # called by on_exit after stop_all
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -qF -- "$RAY_TMPDIR" && kill -KILL "$pid" 2>/dev/null
  done
}
t0=$EPOCHREALTIME

start superlink flower-superlink --insecure --simulation --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "${PORTS[0]}"
wait_for_port "${PORTS[0]}" superlink "${STARTED_PGIDS[0]}"
write_connection sim "${PORTS[0]}"

run_app sim --run-config "num-server-rounds=$ROUNDS num-devices=$NODES $*" \
  --federation-config "num-supernodes=$NODES"
check_status sim
print_table
awk -v t0="$t0" -v t1="$EPOCHREALTIME" -v n="$NODES" -v r="$ROUNDS" 'BEGIN {
  printf "total time: %.1f s (%d simulated SuperNodes, %d rounds)\n", t1 - t0, n, r }'
