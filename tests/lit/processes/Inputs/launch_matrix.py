"""Trains plans of the mlp example as processes and compares them with one device.

    launch_matrix.py OUT_DIR PF CONFIG...     CONFIG: pp=P,dp=D,SCHEDULE[,v=V]

For each configuration: compiles the plan (P devices x D replicas, 4
micro-batches, the schedule, V virtual stages), trains it 2 steps with
`pipeforge launch` (one process per rank) and as threads with `pipeforge run`,
and prints one line: "pp=2 dp=2 zb1: processes = threads, and = one device
within 1e-05", or what differs. One device is `pipeforge run mlp.pf` itself.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "..", "..", "examples")
COMPARE = os.path.join(HERE, "..", "..", "commands", "Inputs", "run_safetensors.py")
BIND = ["--bind", "I=32,H=64,L=2,K=10", "--batch", "16"]
TRAIN = ["--steps", "2", "--optimizer", "sgd", "--seed", "3"]


def run(args):
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done.stdout


def same(a, b, tol):
    done = subprocess.run([sys.executable, COMPARE, "compare", a, b, str(tol)], capture_output=True, text=True)
    return done.returncode == 0, done.stdout.strip()


def main(argv):
    out, pf = argv[1], argv[2]
    mlp = os.path.join(EXAMPLES, "mlp.pf")
    one = os.path.join(out, "one.safetensors")
    run([pf, "run", mlp] + BIND + TRAIN + ["--save-grads", one])
    for config in argv[3:]:
        fields = dict(f.split("=") if "=" in f else ("schedule", f) for f in config.split(","))
        p, d, v = int(fields["pp"]), int(fields["dp"]), int(fields.get("v", "1"))
        name = f"pp={p} dp={d} {fields['schedule']}" + (f" v={v}" if v > 1 else "")
        plan = os.path.join(out, config.replace(",", "_").replace("=", "") + ".json")
        run([pf, "compile", mlp] + BIND + ["--devices", f"cpu:{p}", "--data-parallel", str(d), "--microbatches", "4",
                                          "--schedule", fields["schedule"], "--virtual", str(v), "-o", plan])
        procs, threads = plan + ".procs.safetensors", plan + ".threads.safetensors"
        run([pf, "launch", plan, "--"] + TRAIN + ["--save-grads", procs])
        run([pf, "run", plan] + TRAIN + ["--save-grads", threads])
        bitwise, why = same(procs, threads, 0)
        close, why_one = same(procs, one, 1e-5)
        if bitwise and close:
            print(f"{name}: processes = threads, and = one device within 1e-05")
        else:
            print(f"{name}: processes against threads: {why}; against one device: {why_one}")


if __name__ == "__main__":
    main(sys.argv)
