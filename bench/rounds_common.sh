# Sourced by the benchmark scripts that time plans round after round, with
# the script's arguments ([build dir] [rounds]): sets `build` (default
# build), `rounds` (default 3), `pf` (its pipeforge) and `work` (a folder
# removed on exit), and defines median_step_ms.
build=${1:-build}
rounds=${2:-3}
pf="$build/tools/pipeforge"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# median_step_ms PIPEFORGE PLAN TEXT [FLAGS...] runs the plan 12 steps (on
# TEXT, unless it is empty: then on the model's own random batch; with FLAGS
# given to `run`) and prints the median step time in ms, its first two
# steps (warm-up) left out.
median_step_ms() {
  local pf=$1 plan=$2 text=$3
  shift 3
  "$pf" run "$plan" --steps 12 ${text:+--text "$text"} --seed 1 "$@" | grep '^step' | tail -n +3 |
    awk '{for (i = 1; i <= NF; i++) if ($i == "ms") print $(i - 1)}' | sort -n |
    awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
