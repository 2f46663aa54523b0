#!/usr/bin/python3
"""Times several training-step servers in lockstep: one step of each in turn, cycle after cycle.

    bench/lockstep.py --steps 20 NAME='COMMAND' NAME='COMMAND' ...

Each COMMAND (a shell command) is a step server: it warms up, prints "ready", then runs one step per
line it reads and answers "<seconds> <loss>" (train_step_bench --serve, bench/torch_step_server.py).
The servers start one after the other, so that no warm-up overlaps another; then every cycle runs one
step of each, the first of a cycle rotating, so that whatever the machine does over seconds (it is
shared, and its speed drifts by tens of percent) falls on all programs alike. A pause precedes every
step: OpenBLAS's threads spin for a while after a call (its THREAD_TIMEOUT, about 0.1 s here) and would
take a core from whichever program runs next. Prints one JSON object:
{"NAME": [step seconds, cycle by cycle], ...}.
"""
import argparse
import json
import subprocess
import sys
import time


def start(name, command):
    proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        sys.exit(f"lockstep.py: {name} did not start (printed {line!r}): {command}")
    return proc


def step(name, proc, pause):
    time.sleep(pause)
    proc.stdin.write("step\n")
    proc.stdin.flush()
    line = proc.stdout.readline().split()
    if len(line) != 2:
        sys.exit(f"lockstep.py: {name} stopped answering")
    return float(line[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="cycles (timed steps of each program)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds of quiet before each step")
    ap.add_argument("servers", nargs="+", help="NAME=COMMAND")
    a = ap.parse_args()

    servers = []
    for spec in a.servers:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command:
            sys.exit(f"lockstep.py: '{spec}' is not NAME=COMMAND")
        servers.append((name, start(name, command)))
    times = {name: [] for name, _ in servers}
    try:
        for cycle in range(a.steps):
            first = cycle % len(servers)
            for name, proc in servers[first:] + servers[:first]:
                times[name].append(step(name, proc, a.pause))
    finally:
        for _, proc in servers:
            proc.stdin.close()
            proc.wait()
    print(json.dumps(times))


if __name__ == "__main__":
    main()
