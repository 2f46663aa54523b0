"""Kills (SIGKILL) training runs at random moments while they write a
checkpoint every step, and checks what survives.

    kill_checkpoints.py PF WORK KILLS STEPS PLAN... -- FLAGS...

1. KILLS times, `PF run PLAN --checkpoint WORK/ck --checkpoint-every 1` (the
   first plan, a constant learning rate) is killed a random moment after it
   wrote its first checkpoint (seeded: the same delays on every run of the
   test), in the middle of later writes; each time the
   checkpoint the folder holds must load (`--resume` for one more step),
   never a torn one.
2. For each PLAN, a run of STEPS steps (with FLAGS) killed part-way and resumed from its
   last checkpoint to STEPS must end with the weights, bit for bit, of a run
   of STEPS steps that never stopped.
Prints one line per part.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time


def checkpoint_step(ck):
    try:
        with open(os.path.join(ck, "index.json")) as f:
            return int(json.load(f)["step"])
    except FileNotFoundError:
        return None


def index_stamp(ck):
    try:
        return os.stat(os.path.join(ck, "index.json")).st_mtime_ns
    except FileNotFoundError:
        return None


def run_killed(command, ck, delay):
    """Starts `command`, waits for it to write a checkpoint into `ck` (the
    index replaced), then kills it `delay` seconds later, in the middle of
    later writes. True if it was killed before it finished."""
    before = index_stamp(ck)
    p = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120  # a loaded machine starts slowly
    while p.poll() is None and index_stamp(ck) == before and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    killed = p.poll() is None
    p.kill()
    p.wait()
    return killed


def main(argv):
    split = argv.index("--")
    pf, work, kills, steps, plans = argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5:split]
    flags = argv[split + 1:]
    rng = random.Random(20261204)

    ck = os.path.join(work, "ck")
    loaded = torn = 0
    for _ in range(kills):
        run_killed([pf, "run", plans[0], "--steps", "100000", "--checkpoint", ck, "--checkpoint-every", "1"], ck,
                   rng.uniform(0.0, 0.2))
        step = checkpoint_step(ck)
        if step is None:
            torn += 1
            sys.stderr.write("no checkpoint was written\n")
            continue
        done = subprocess.run([pf, "run", plans[0], "--resume", ck, "--steps", str(step + 1)], capture_output=True,
                              text=True)
        if done.returncode == 0:
            loaded += 1
        else:
            torn += 1
            sys.stderr.write(done.stderr)
    print(f"killed {kills} times while checkpointing: the checkpoint loaded {loaded} times, failed {torn} times")

    for plan in plans:
        name = os.path.splitext(os.path.basename(plan))[0]
        straight = os.path.join(work, f"{name}.straight.safetensors")
        subprocess.run([pf, "run", plan, "--steps", str(steps), "--save-weights", straight] + flags, check=True,
                       stdout=subprocess.DEVNULL)
        ck = os.path.join(work, f"{name}.ck")
        shutil.rmtree(ck, ignore_errors=True)
        # Killed part-way, soon after a checkpoint, then resumed to the end.
        run_killed([pf, "run", plan, "--steps", str(steps), "--checkpoint", ck, "--checkpoint-every", "3"] + flags, ck,
                   rng.uniform(0.0, 0.05))
        at = checkpoint_step(ck)
        if at is None or at >= steps:
            print(f"{name}: could not kill a run between its checkpoints")
            continue
        resumed = os.path.join(work, f"{name}.resumed.safetensors")
        subprocess.run([pf, "run", plan, "--resume", ck, "--steps", str(steps), "--save-weights", resumed] + flags,
                       check=True, stdout=subprocess.DEVNULL)
        with open(straight, "rb") as a, open(resumed, "rb") as b:
            same = a.read() == b.read()
        sys.stderr.write(f"{name}: killed after the checkpoint of step {at}\n")
        print(f"{name}: killed and resumed, the weights {'equal' if same else 'DIFFER from'} those of a run that "
              "never stopped")


if __name__ == "__main__":
    main(sys.argv)
