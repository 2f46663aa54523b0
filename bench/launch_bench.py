#!/usr/bin/python3
"""The same plans as threads (`pipeforge run PLAN`) and as processes (`pipeforge launch PLAN`),
against one device and the ideal; prints one table.

    bench/launch_bench.py [PIPEFORGE] [--steps N] [--rounds R]

Each plan trains N steps in each mode, R rounds alternating the modes so that
the machine's drift hits both; a mode's time is the median step time (the
first step left out), its throughput samples per second. One device is the
model itself (`pipeforge run MODEL.pf`, one thread). Ideal: the number of
devices x one device's throughput x (1 - the schedule's bubble on unit
costs, as the plan predicts it). The overhead per hand-off is the step time
processes add over threads, divided by the hand-offs one step sends
(2 per micro-batch per stage boundary, per replica).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "examples", "gpt.pf")
BIND = ["--bind", "L=4,C=256,H=4,T=64,S=64,V=2048", "--batch", "16"]
LAYOUTS = [("pp=2 dp=1", ["--devices", "cpu:2"]), ("pp=1 dp=2", ["--devices", "cpu:1", "--data-parallel", "2"]),
           ("pp=1 dp=2 sharded", ["--devices", "cpu:1", "--data-parallel", "2", "--shard-optimizer"])]
STEP = re.compile(r"^step +(\d+) .* ([0-9.]+) ms ")


def steps(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    times = [float(m.group(2)) for m in map(STEP.match, out.splitlines()) if m and int(m.group(1)) > 1]
    return statistics.median(times) / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipeforge", nargs="?", default=os.path.join(ROOT, "build", "tools", "pipeforge"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    pf = a.pipeforge
    # Any text will do; the GPL ships with every Debian system.
    train = ["--steps", str(a.steps), "--optimizer", "sgd", "--text", "/usr/share/common-licenses/GPL-3"]
    work = tempfile.mkdtemp()
    batch = 16
    one = statistics.median(steps([pf, "run", MODEL] + BIND + train) for _ in range(a.rounds))
    print(f"one device: {one * 1e3:.1f} ms a step, {batch / one:.1f} samples/s\n")
    print("| layout | schedule | m | threads ms | processes ms | processes / threads | overhead per hand-off "
          "| processes samples/s | ideal samples/s | of ideal |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, layout in LAYOUTS:
        plan = os.path.join(work, name.replace(" ", "_").replace("=", "") + ".json")
        m = 4
        subprocess.run([pf, "compile", MODEL] + BIND + layout + ["--microbatches", str(m), "-o", plan],
                       capture_output=True, check=True)
        with open(plan) as f:
            p = json.load(f)
        stages, ranks = len(p["stages"]), len(p["ranks"])
        replicas = ranks // stages
        bubble = p["predicted"]["bubble_fraction"]
        threads, procs = [], []
        for _ in range(a.rounds):
            threads.append(steps([pf, "run", plan] + train))
            procs.append(steps([pf, "launch", plan, "--"] + train))
        t, q = statistics.median(threads), statistics.median(procs)
        hand_offs = 2 * m * (stages - 1) * replicas
        per = f"{(q - t) / hand_offs * 1e6:.0f} us" if hand_offs else "-"
        ideal = ranks * (batch / one) * (1 - bubble)
        print(f"| {name} | {p['schedule']['kind']} | {m} | {t * 1e3:.1f} | {q * 1e3:.1f} | {q / t:.2f} | {per} | "
              f"{batch / q:.1f} | {ideal:.1f} | {100 * batch / q / ideal:.0f}% |")


if __name__ == "__main__":
    main()
