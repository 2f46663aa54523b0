"""Trains plans of the mlp example as processes and compares them with one device.

    launch_matrix.py OUT_DIR PF CONFIG...     CONFIG: pp=P,dp=D,SCHEDULE[,v=V][,tp=T][,sp][,shard]

For each configuration: compiles the plan (P devices x D replicas, 4
micro-batches, the schedule, V virtual stages, each device a tensor-parallel
group of T ranks, with `sp` its tokens too, the optimizer state shared out
between the replicas with `shard`), trains it 2 steps with `pipeforge launch`
(one process per rank) and as threads with `pipeforge run`, and prints one
line: "pp=2 dp=2 zb1: processes = threads, and = one device within 1e-05"
(the first step's gradients and the trained weights), or what differs. One
device is `pipeforge run mlp.pf` itself.
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
    one = os.path.join(out, "one")
    run([pf, "run", mlp] + BIND + TRAIN + ["--save-grads", one + ".safetensors", "--save-weights", one + ".weights"])
    for config in argv[3:]:
        words = config.split(",")
        flags = {"shard", "sp"}
        fields = dict(f.split("=") if "=" in f else ("schedule", f) for f in words if f not in flags)
        shard, sequence = "shard" in words, "sp" in words
        p, d, v, t = int(fields["pp"]), int(fields["dp"]), int(fields.get("v", "1")), int(fields.get("tp", "1"))
        name = (f"pp={p} dp={d} {fields['schedule']}" + (f" v={v}" if v > 1 else "") + (f" tp={t}" if t > 1 else "")
                + (" sp" if sequence else "") + (" shard" if shard else ""))
        plan = os.path.join(out, config.replace(",", "_").replace("=", "") + ".json")
        run([pf, "compile", mlp] + BIND + ["--devices", f"cpu:{p * t}", "--data-parallel", str(d), "--microbatches", "4",
                                          "--schedule", fields["schedule"], "--virtual", str(v), "-o", plan]
            + (["--tensor-parallel", str(t)] if t > 1 else []) + (["--sequence-parallel"] if sequence else [])
            + (["--shard-optimizer"] if shard else []))
        procs, threads = plan + ".procs", plan + ".threads"
        run([pf, "launch", plan, "--"] + TRAIN + ["--save-grads", procs + ".safetensors", "--save-weights",
                                                   procs + ".weights"])
        run([pf, "run", plan] + TRAIN + ["--save-grads", threads + ".safetensors", "--save-weights",
                                         threads + ".weights"])
        why = []
        for kind in (".safetensors", ".weights"):
            bitwise, against_threads = same(procs + kind, threads + kind, 0)
            close, against_one = same(procs + kind, one + kind, 1e-5)
            what = "gradients" if kind == ".safetensors" else "weights"
            if not bitwise:
                why.append(f"{what} of processes against threads: {against_threads}")
            if not close:
                why.append(f"{what} against one device: {against_one}")
        if not why:
            print(f"{name}: processes = threads, and = one device within 1e-05")
        else:
            print(f"{name}: " + "; ".join(why))


if __name__ == "__main__":
    main(sys.argv)
