"""Starts `pipeforge launch`, stops one rank once the job trains, and tells how the job ended.

    kill_rank.py PF PLAN RANK SIGNAL -- RUN_FLAGS...     SIGNAL: KILL or STOP

Waits for the second step line, finds the worker whose PF_RANK is RANK (a
child of the launcher), sends it SIGKILL or SIGSTOP, and waits for the
launcher (at most 60 s). Prints the launcher's standard error, "exit status
N", and "workers left: none" or the pids of workers that outlived it.
"""

import os
import signal
import subprocess
import sys
import time


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except OSError:
            pass
    return out


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"PF_RANK="):
                    return int(item[8:])
    except OSError:
        pass
    return None


def main(argv):
    pf, plan, rank, sig = argv[1], argv[2], int(argv[3]), argv[4]
    flags = argv[6:]
    launcher = subprocess.Popen([pf, "launch", plan, "--"] + flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    steps = 0
    while steps < 2:
        line = launcher.stdout.readline()
        if not line:
            break
        steps += line.startswith("step")
    workers = children(launcher.pid)
    victim = next((p for p in workers if rank_of(p) == rank), None)
    if victim is None:
        launcher.kill()
        sys.exit(f"kill_rank.py: no worker of rank {rank} among {workers}")
    os.kill(victim, signal.SIGKILL if sig == "KILL" else signal.SIGSTOP)
    try:
        _, err = launcher.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        launcher.kill()
        _, err = launcher.communicate()
        print("the launcher did not stop within 60 s")
    sys.stdout.write(err)
    print(f"exit status {launcher.returncode}")
    time.sleep(0.2)
    alive = [p for p in workers if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    print("workers left: " + (" ".join(map(str, alive)) if alive else "none"))


if __name__ == "__main__":
    main(sys.argv)
