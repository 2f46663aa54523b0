"""Starts a plan's two ranks by hand, as a cluster's scheduler would: `pipeforge run` with PF_RANK set.

    by_hand.py [--astray] PF PLAN RANK0_FLAGS... --rank1 RANK1_FLAGS...

Picks a free port, starts both ranks (with --astray, rank 1 is told another
port, where nothing listens), waits for them (at most 60 s) and prints, per
rank, its standard error and "rank R: exit status N".
"""

import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv):
    astray = argv[1] == "--astray"
    if astray:
        argv = argv[:1] + argv[2:]
    pf, plan = argv[1], argv[2]
    split = argv.index("--rank1")
    flags = [argv[3:split], argv[split + 1:]]
    port = free_port()
    ports = [port, free_port() if astray else port]
    ranks = []
    for rank in (0, 1):
        env = dict(os.environ, PF_RANK=str(rank), PF_WORLD_SIZE="2", PF_MASTER_ADDR="127.0.0.1",
                   PF_MASTER_PORT=str(ports[rank]))
        ranks.append(subprocess.Popen([pf, "run", plan] + flags[rank], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    for rank, p in enumerate(ranks):
        _, err = p.communicate(timeout=60)
        sys.stdout.write(err)
        print(f"rank {rank}: exit status {p.returncode}")


if __name__ == "__main__":
    main(sys.argv)
