#!/usr/bin/python3
"""A stand-in for `pipeforge run`, used only by self_test.py to test the checker.

It accepts the command line check_against_torch.py gives Pipeforge, computes
the loss and gradients with torch_reference's models in float32 (as Pipeforge
computes), prints "step 1  loss <value>" and writes --save-grads. So the
checker can be exercised end to end, and its tolerance judged against a real
float32 computation, without a Pipeforge that can train.

PF_STAND_IN_BUG plants one defect, to show the checker catches it:
    loss      print a loss 1e-3 too large (relative)
    grad      scale one gradient entry of the last parameter by 1.001
    missing   leave the last parameter's gradient out
    shape     save the first matrix's gradient flattened
    nan       put a NaN in one gradient
    crash     exit with status 3 and a message on stderr
"""

import argparse
import os
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402
import torch_reference  # noqa: E402


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--bind", default="")
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--clip", type=float, default=0)
    parser.add_argument("--init-from", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--save-grads", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    bug = os.environ.get("PF_STAND_IN_BUG", "")
    if bug == "crash":
        print("stand-in: planted crash", file=sys.stderr)
        return 3

    # The case is the one whose model file this is; the dimensions come from
    # the command line, as Pipeforge would take them.
    model = pathlib.Path(args.model).resolve()
    case = next(c for c in torch_reference.CASES.values() if torch_reference.REPO_ROOT / c.model == model)
    dims = {"B": args.batch}
    dims.update({k: int(v) for k, v in (kv.split("=") for kv in args.bind.split(",") if kv)})

    weights, _ = safetensors_io.load(args.init_from)
    data, _ = safetensors_io.load(args.data)
    params = {k: torch.from_numpy(v).requires_grad_(True) for k, v in weights.items()}
    batch = {k: torch.from_numpy(v) for k, v in data.items()}
    loss = case.loss(params, batch, dims)
    grads = dict(zip(params, (g.numpy().copy() for g in torch.autograd.grad(loss, list(params.values())))))

    value = float(loss) * (1.001 if bug == "loss" else 1.0)
    names = list(grads)
    if bug == "grad":
        # An entry of the largest magnitude, so the change is 1e-3 of the max.
        g = grads[names[-1]]
        g[np.unravel_index(np.argmax(np.abs(g)), g.shape)] *= 1.001
    if bug == "missing":
        del grads[names[-1]]
    if bug == "shape":
        matrix = next(n for n in names if grads[n].ndim == 2)
        grads[matrix] = grads[matrix].reshape(-1)
    if bug == "nan":
        grads[names[0]].flat[0] = np.nan
    print(f"step 1  loss {value:.6f}  lr 0")
    safetensors_io.save(args.save_grads, grads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
