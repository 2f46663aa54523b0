# Shared by the sampling benchmarks (sourced): a GPT-2 small-shaped model
# (12 blocks of width 768, T = 1024, byte vocabulary) with weights after one
# step, and the two sides' timings. Expects `build`, `threads` and `here`
# (the source tree) set.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pf="$build/tools/pipeforge"
bind="T=1024,L=12,C=768,H=12,S=1024,V=256"
/usr/bin/python3 -c "open('$work/text.txt', 'w').write('pipeforge samples text. ' * 100)"
"$pf" run "$here/examples/gpt.pf" --bind "B=1,$bind" --text "$work/text.txt" --steps 1 \
  --save-weights "$work/w.safetensors" > /dev/null

# Tokens drawn after a prompt of $1: 33, or as many as stay within T.
draws() { echo $(($1 + 33 > 1024 ? 1024 - $1 : 33)); }

# `pipeforge sample`'s own milliseconds per drawn token (from the first drawn
# to the last) after a prompt of $1 tokens; further flags after it.
ms_per_token() {
  "$pf" sample "$here/examples/gpt.pf" --bind "$bind" --weights "$work/w.safetensors" --threads "$threads" \
    --prompt "$(head -c "$1" "$work/text.txt")" --tokens "$(draws "$1")" "${@:2}" 2>&1 > /dev/null |
    sed -n 's/.* then \([0-9.]*\) ms per token.*$/\1/p'
}

# PyTorch's milliseconds per step after a prompt of $1 tokens (bench/torch_sample.py,
# its best setting here: OpenBLAS's own kernel for this CPU and tcmalloc); further
# flags after it.
torch_ms() {
  env -u OPENBLAS_CORETYPE LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
    /usr/bin/python3 "$here/bench/torch_sample.py" --threads "$threads" --prompts "$1" --tokens 33 "${@:2}" |
    /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"
}

calc() { /usr/bin/python3 -c "print($1)"; }
median() { /usr/bin/python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
