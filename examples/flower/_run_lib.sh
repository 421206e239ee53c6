# Shared by deploy.sh and sim.sh (sourced, not run): argument checks, free loopback ports, a
# private $FLWR_HOME, starting Flower's processes in their own process groups, stopping every one
# of them on any exit, and judging a run by its final status. Loopback (127.0.0.1) only.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STARTED_PGIDS=()  # process groups of the Flower processes (one per setsid start)
ROOTS=()          # every process this script started; their descendants are found at stop time
WORK=""
KEEP_WORK=0

die() {  # one error line, then exit $2 (default 1); the EXIT trap stops what was started
  echo "error: $1" >&2
  exit "${2:-1}"
}

need_count() {  # need_count NAME VALUE MIN: a whole number >= MIN, else exit 2
  [[ "$2" =~ ^[0-9]+$ ]] && (( 10#$2 >= $3 )) ||
    die "$1=$2: need a whole number >= $3 (usage: $USAGE)" 2
}

parse_counts() {  # parse_counts "$@": NODES (>= 2) and ROUNDS (>= 1) from the first two arguments
  (($# >= 2)) || die "NODES and ROUNDS are required (usage: $USAGE)" 2
  need_count NODES "$1" 2
  need_count ROUNDS "$2" 1
  NODES=$((10#$1)) ROUNDS=$((10#$2))
}

find_tools() {  # Flower's commands and the Python of the same environment
  local tool venv="$HERE/../../.venv/bin"
  # Not activated: the repository's .venv, as the README's install command makes it.
  command -v flwr >/dev/null || { [ -x "$venv/flwr" ] && PATH="$(cd "$venv" && pwd):$PATH"; }
  for tool in flwr flower-superlink "$@"; do
    command -v "$tool" >/dev/null ||
      die "$tool not found: activate the environment made with pip install -e '.[flower]'" 2
  done
  PY="$(dirname "$(command -v flwr)")/python"
  [ -x "$PY" ] || PY=python3
}

pick_ports() {  # pick_ports COUNT: COUNT free loopback ports in PORTS (from $FLOWER_PORT if set)
  local out
  out=$("$PY" - "$1" "${FLOWER_PORT:-}" <<'EOF'
import socket, sys
count, base = int(sys.argv[1]), sys.argv[2]
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
if base:
    ports = [int(base) + i for i in range(count)]
    busy = [p for p in ports if not free(p)]
    if busy:
        print(f"port {busy[0]} on 127.0.0.1 is busy; set FLOWER_PORT to the first of {count} free ports")
        sys.exit(1)
else:  # ask the OS; hold every socket until all are chosen so that no port comes twice
    socks = []
    for _ in range(count):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
print(" ".join(map(str, ports)))
EOF
  ) || die "$out" 2
  read -r -a PORTS <<<"$out"
}

make_home() {  # a private FLWR_HOME and log directory: never ~/.flwr
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sflam-flower.XXXXXX")
  export FLWR_HOME="$WORK/flwr-home"
  mkdir -p "$FLWR_HOME"
  # No telemetry and no update check: nothing leaves the machine.
  export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
  export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
}

start() {  # start LOGNAME CMD...: in its own process group (its children join it)
  setsid "${@:2}" >"$WORK/$1.log" 2>&1 </dev/null &
  STARTED_PGIDS+=("$!")
  ROOTS+=("$!")
}

tree() {  # the started processes and all their descendants (Flower detaches some children)
  ps -eo pid=,ppid= | awk -v roots="${ROOTS[*]}" '
    { parent[$1] = $2 }
    END {
      n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1
      do { grew = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } } while (grew)
      for (p in keep) print p
    }'
}

stop_all() {  # TERM every process started and its descendants, KILL what is left after 10 s
  local pg pids deadline
  ((${#ROOTS[@]})) || return 0
  pids=$(tree)
  for pg in "${STARTED_PGIDS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null; done
  kill -TERM $pids 2>/dev/null
  deadline=$((SECONDS + 10))
  # Until none is left but zombies (reaped by `wait` below, or by init for detached ones).
  while ((SECONDS < deadline)) && ps -o stat= -p "$(echo $pids | tr ' ' ,)" 2>/dev/null | grep -q '^[^Z]'; do
    sleep 0.2
  done
  for pg in "${STARTED_PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
  kill -KILL $pids 2>/dev/null
  wait 2>/dev/null
  STARTED_PGIDS=() ROOTS=()
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
  if [ -n "$WORK" ]; then
    if ((rc == 0 && !KEEP_WORK)); then rm -rf "$WORK"; else echo "logs: $WORK" >&2; fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'echo "error: interrupted" >&2; exit 130' INT TERM

wait_for_port() {  # wait_for_port PORT WHAT PGID: bounded wait until something listens
  local i
  for ((i = 0; i < 600; i++)); do
    "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" \
      "$1" 2>/dev/null && return 0
    kill -0 -- "-$3" 2>/dev/null || die "$2 exited at start: $(grep -v '^\s*$' "$WORK/$2.log" | tail -1)"
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1 within 60 s"
}

write_connection() {  # write_connection NAME PORT: a SuperLink connection in $FLWR_HOME/config.toml
  cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "$1"

[superlink.$1]
address = "127.0.0.1:$2"
insecure = true
EOF
}

run_app() {  # run_app CONNECTION ARGS...: flwr run with logs streamed; sets RUN_ID and RUN_LOG
  RUN_LOG="$WORK/run.log"
  # In the background and waited for, so that Ctrl-C and TERM reach the trap at once (bash runs
  # traps only between foreground commands); --foreground keeps it in this process group.
  (timeout --foreground "${FLOWER_RUN_TIMEOUT:-3600}" flwr run "$HERE" "$@" --stream 2>&1 |
    tee "$RUN_LOG") &
  ROOTS+=("$!")
  wait "$!"
  RUN_ID=$(sed -n 's/.*Successfully started run \([0-9]\+\).*/\1/p' "$RUN_LOG" | head -1)
  [ -n "$RUN_ID" ] || die "flwr run did not start a run: $(grep -v '^\s*$' "$RUN_LOG" | tail -1)"
}

check_status() {  # exit 1 with Flower's reason unless the run finished:completed
  local status
  status=$(flwr ls "$1" --run-id "$RUN_ID" --format json 2>&1 | "$PY" -c '
import json, sys
text = sys.stdin.read()
try:
    run = json.loads(text)["runs"][0]
except (ValueError, KeyError, IndexError):
    print("unknown\t" + " ".join(text.split())[:300]); sys.exit()
print(run["status"] + "\t" + str(run.get("status-details", "")))')
  [ "${status%%$'\t'*}" = "finished:completed" ] ||
    die "run $RUN_ID ended ${status%%$'\t'*}: ${status#*$'\t'}"
}

print_table() {  # the ServerApp's per-round table from the streamed log, without colours
  echo
  sed 's/\x1b\[[0-9;]*m//g' "$RUN_LOG" | sed -n '/round  accuracy  uplink bytes/,$p' |
    sed -E 's/^INFO :      //' | grep -E '^(round|note:|[[:space:]]*[0-9]+[[:space:]])'
}
