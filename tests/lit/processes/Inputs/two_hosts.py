"""Runs one plan on two "hosts": two network namespaces joined by a veth pair.

    two_hosts.py PF PLAN REFERENCE.safetensors -- RUN_FLAGS...

Creates namespaces A (10.231.0.1) and B (10.231.0.2), starts
`pipeforge launch --nnodes 2` in each (node 0 in A serves the store), waits
for both, and compares the first step's gradients (--save-grads, written by
rank 0 in A) with REFERENCE bit for bit. Prints "two hosts: statuses 0 0,
gradients = the reference", or what went wrong; or "skipped: ..." where
namespaces cannot be made (no root, no iproute2). Removes what it made.
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "..", "..", "commands", "Inputs", "run_safetensors.py")


def ip(*args):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True)


def main(argv):
    pf, plan, reference = argv[1], argv[2], argv[3]
    flags = argv[5:]
    tag = os.getpid() % 100000
    a, b = f"pfa{tag}", f"pfb{tag}"
    made = []
    try:
        steps = [("netns", "add", a), ("netns", "add", b),
                 ("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}"),
                 ("link", "set", f"va{tag}", "netns", a), ("link", "set", f"vb{tag}", "netns", b),
                 ("-n", a, "addr", "add", "10.231.0.1/24", "dev", f"va{tag}"),
                 ("-n", b, "addr", "add", "10.231.0.2/24", "dev", f"vb{tag}"),
                 ("-n", a, "link", "set", f"va{tag}", "up"), ("-n", b, "link", "set", f"vb{tag}", "up"),
                 ("-n", a, "link", "set", "lo", "up"), ("-n", b, "link", "set", "lo", "up")]
        for step in steps:
            done = ip(*step)
            if done.returncode != 0:
                print(f"skipped: cannot make two hosts here (ip {' '.join(step)}: {done.stderr.strip()})")
                return
            if step[:2] == ("netns", "add"):
                made.append(step[2])
        out = tempfile.mkdtemp()
        grads = os.path.join(out, "grads.safetensors")
        nodes = []
        for rank, ns in enumerate((a, b)):
            args = ["ip", "netns", "exec", ns, pf, "launch", "--nnodes", "2", "--node-rank", str(rank), "--nproc",
                    "2", "--master-addr", "10.231.0.1", "--master-port", "29611", plan, "--"] + flags
            args += ["--save-grads", grads]  # every rank runs the same flags; rank 0 writes
            nodes.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [n.communicate(timeout=120) for n in nodes]
        statuses = [n.returncode for n in nodes]
        if statuses != [0, 0]:
            print(f"two hosts: statuses {statuses[0]} {statuses[1]}")
            for o, e in results:
                sys.stdout.write(o + e)
            return
        same = subprocess.run([sys.executable, COMPARE, "compare", grads, reference, "0"], capture_output=True,
                              text=True)
        verdict = "gradients = the reference" if same.returncode == 0 else "gradients differ: " + same.stdout
        print(f"two hosts: statuses 0 0, {verdict}")
        sys.stdout.write(results[0][0])
    finally:
        for ns in made:
            ip("netns", "del", ns)


if __name__ == "__main__":
    main(sys.argv)
