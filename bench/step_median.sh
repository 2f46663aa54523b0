# Sourced by the benchmark scripts: median_step_ms PIPEFORGE PLAN TEXT runs
# the plan 12 steps on TEXT and prints the median step time in ms, its first
# two steps (warm-up) left out.
median_step_ms() {
  "$1" run "$2" --steps 12 --text "$3" --seed 1 | grep '^step' | tail -n +3 |
    awk '{for (i = 1; i <= NF; i++) if ($i == "ms") print $(i - 1)}' | sort -n |
    awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
