"""Compares two `pipeforge simulate` outputs of the same pipeline: every
stage's peak memory and the largest stage's all-reduce must be smaller in
the second. Prints one line per quantity, 'smaller' or what is not."""

import re
import sys

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


def read(path):
    text = open(path).read()
    memory = [float(n) * UNITS[u] for n, u in re.findall(r"^\s+\d+\s+\S+\s+(?:[\d.]+\s+){4}([\d.]+) (\w+)", text, re.M)]
    all_reduce = float(re.search(r"all-reduce over \d+ replicas: ([\d.]+) ms", text).group(1))
    return memory, all_reduce


(first_memory, first_sum), (second_memory, second_sum) = read(sys.argv[1]), read(sys.argv[2])
assert first_memory and len(first_memory) == len(second_memory), (first_memory, second_memory)
for stage, (a, b) in enumerate(zip(first_memory, second_memory)):
    print(f"stage {stage} peak memory: " + ("smaller" if b < a else f"{b} not below {a}"))
print("all-reduce: " + ("smaller" if second_sum < first_sum else f"{second_sum} not below {first_sum}"))
