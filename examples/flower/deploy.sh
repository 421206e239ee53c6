#!/usr/bin/env bash
# Run the example app on Flower's deployment engine on this machine: one SuperLink and NODES
# SuperNodes, each its own process, started with Flower's own commands on 127.0.0.1 only, and
# `flwr run` against them. No simulation engine and no ray.
#
#   bash examples/flower/deploy.sh NODES ROUNDS [KEY=VALUE ...]
#
# NODES >= 2 SuperNodes (the app trains at least 2 per round), SuperNode i with partition-id=i;
# the app's scenario has NODES devices. KEY=VALUE pairs override the app's run config
# (examples/flower/pyproject.toml), e.g. fraction-train=1.0. The app calibrates its bound online
# (calibration="online"): rounds 1..fit-rounds (default 5) send 4-bit updates and measure the
# constants, later rounds are solved with them; with ROUNDS <= fit-rounds (CI's 2) every round is
# a fit round and the table ends with a note saying so. 'calibration="scenario"' uses the
# scenario's constants from round 1. The connections are insecure
# (plain HTTP), acceptable on loopback only; see examples/flower/README.md for several machines
# and TLS. FLOWER_PORT=P uses ports P..P+NODES (SuperLink on P), else free ones are picked;
# FLOWER_RUN_TIMEOUT (s, default 3600) bounds the run. Every process started is stopped on
# success, failure and Ctrl-C. Exit 0 only when the run's final status is finished:completed.
USAGE="bash examples/flower/deploy.sh NODES ROUNDS [KEY=VALUE ...]"
source "$(dirname "${BASH_SOURCE[0]}")/_run_lib.sh"

parse_counts "$@"
shift 2
find_tools flower-supernode
pick_ports $((NODES + 1))
make_home
t0=$EPOCHREALTIME

start superlink flower-superlink --insecure --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "${PORTS[0]}"
wait_for_port "${PORTS[0]}" superlink "${STARTED_PGIDS[0]}"
write_connection loopback "${PORTS[0]}"
for ((i = 0; i < NODES; i++)); do
  start "node$i" flower-supernode --insecure --superlink "127.0.0.1:${PORTS[0]}" \
    --host 127.0.0.1 --port "${PORTS[i + 1]}" \
    --node-config "partition-id=$i num-partitions=$NODES"
done

# Bounded wait until the SuperLink lists every SuperNode online.
for ((tries = 0; ; tries++)); do
  online=$(flwr supernode ls loopback --format json 2>/dev/null | "$PY" -c '
import json, sys
try:
    nodes = json.load(sys.stdin).get("nodes", [])
except ValueError:
    nodes = []
print(sum(str(n.get("status", "")).lower() == "online" for n in nodes))')
  ((online >= NODES)) && break
  for ((i = 1; i <= NODES; i++)); do
    kill -0 -- "-${STARTED_PGIDS[i]}" 2>/dev/null ||
      die "SuperNode $((i - 1)) exited: $(grep -v '^\s*$' "$WORK/node$((i - 1)).log" | tail -1)"
  done
  ((tries < 600)) || die "only $online of $NODES SuperNodes connected within 120 s"
  sleep 0.2
done
echo "SuperLink on 127.0.0.1:${PORTS[0]}, $NODES SuperNodes online (ports ${PORTS[*]:1})"

run_app loopback --run-config "num-server-rounds=$ROUNDS num-devices=$NODES $*"
check_status loopback
print_table
awk -v t0="$t0" -v t1="$EPOCHREALTIME" -v n="$NODES" -v r="$ROUNDS" 'BEGIN {
  printf "total time: %.1f s (%d SuperNodes, %d rounds; from starting the SuperLink to the end of the run)\n", t1 - t0, n, r }'
