"""PyTorch -> ONNX -> Pipeforge: the same numbers.

Usage:
    /usr/bin/python3 tests/onnx/check_round_trip.py PIPEFORGE [CASE...]

For each case of torch_models.py (default: all) it exports the model with
torch.onnx.export in training mode, imports it with `PIPEFORGE import`
(weights included), and trains it 5 SGD steps (momentum 0.9) on one batch three ways:
PyTorch in float64 from the same weights (the reference), Pipeforge on one
device (`run MODEL.pf`), and Pipeforge pipelined over 2 CPU stages with 1F1B
(`compile` then `run PLAN.json`). Every step's loss and the first step's
gradient of every parameter must match the reference within TOLERANCE
(relative; a gradient's error is max|a - b| / max|b|, as in
tests/reference/check_against_torch.py).

Exit status: 0 all passed, 1 any failed, 77 skipped when torch or onnx
cannot be imported.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reference"))

TOLERANCE = 1e-4
STEPS = 5
LR = 0.1
MOMENTUM = 0.9
SKIPPED = 77
STEP_LINE = re.compile(r"^step\s+(\d+)\s+loss\s+(\S+)")


def run(command):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
                           f"{result.stdout}{result.stderr}")
    return result.stdout


def losses_of(stdout):
    return [float(m.group(2)) for m in map(STEP_LINE.match, stdout.splitlines()) if m]


def reference(case, model, batch):
    """Losses of STEPS SGD steps and the first step's gradients, in float64."""
    import torch

    model = model.double()
    inputs = [batch[name].double() if batch[name].is_floating_point() else batch[name] for name in case.inputs]
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses, grads = [], None
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = case.loss(model(*inputs), batch[case.target])
        loss.backward()
        losses.append(loss.item())
        if grads is None:
            grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}
        optimizer.step()
    return losses, grads


def compare(what, losses, grads_path, expected_losses, expected_grads):
    import safetensors_io
    from check_against_torch import tensor_error

    problems = []
    if len(losses) != len(expected_losses):
        return [f"{what}: {len(losses)} step losses, expected {len(expected_losses)}"]
    for step, (a, b) in enumerate(zip(losses, expected_losses), 1):
        if not abs(a - b) <= TOLERANCE * max(abs(b), 1e-12):
            problems.append(f"{what}: step {step} loss {a!r}, PyTorch {b!r}")
    grads, _ = safetensors_io.load(grads_path)
    if set(grads) != set(expected_grads):
        problems.append(f"{what}: gradients of {sorted(grads)}, PyTorch has {sorted(expected_grads)}")
    worst = 0.0
    for name in set(grads) & set(expected_grads):
        error = tensor_error(grads[name], expected_grads[name])
        worst = max(worst, error)
        if not error <= TOLERANCE:
            problems.append(f"{what}: gradient of {name} off by {error:.2e}")
    return problems, worst


def check(pipeforge, name, work):
    import numpy as np
    import torch

    import safetensors_io
    import torch_models

    case = torch_models.CASES[name]
    torch.manual_seed(0)
    model = case.make()
    batch = case.batch(torch.Generator().manual_seed(1))
    onnx_path = work / f"{name}.onnx"
    example = tuple(batch[n] for n in case.inputs)
    torch.onnx.export(model, example, str(onnx_path), training=torch.onnx.TrainingMode.TRAINING,
                      opset_version=case.opset, do_constant_folding=False, input_names=case.inputs,
                      output_names=["logits"],
                      dynamic_axes={**{n: {0: "batch"} for n in case.inputs}, "logits": {0: "batch"}})
    expected_losses, expected_grads = reference(case, model, batch)

    size = len(batch[case.target])
    run(pipeforge + ["import", onnx_path, "-o", work / "model.pf", "--weights", work / "weights.safetensors",
                     "--loss", f"cross_entropy:{case.target}", "--bind", f"batch={size}"])
    data = {n: (t.numpy().astype(np.float32) if t.is_floating_point() else t.numpy().astype(np.int32))
            for n, t in batch.items()}
    safetensors_io.save(work / "data.safetensors", data)
    train = ["--init-from", work / "weights.safetensors", "--data", work / "data.safetensors", "--steps", STEPS,
             "--optimizer", "sgd", "--lr", LR, "--momentum", MOMENTUM, "--clip", "0"]

    problems, summary = [], []
    out = run(pipeforge + ["run", work / "model.pf"] + train + ["--save-grads", work / "one.safetensors"])
    p, worst = compare("one device", losses_of(out), work / "one.safetensors", expected_losses, expected_grads)
    problems += p
    summary.append(f"one device {worst:.1e}")
    run(pipeforge + ["compile", work / "model.pf", "--devices", "cpu:2", "--microbatches", 2, "--schedule", "1f1b",
                     "-o", work / "plan.json"])
    out = run(pipeforge + ["run", work / "plan.json"] + train + ["--save-grads", work / "two.safetensors"])
    p, worst = compare("2 stages 1f1b", losses_of(out), work / "two.safetensors", expected_losses, expected_grads)
    problems += p
    summary.append(f"2 stages {worst:.1e}")
    return problems, f"losses {expected_losses[0]:.4f} -> {expected_losses[-1]:.4f}; worst gradient error: " + \
        ", ".join(summary)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e} (apt-get install python3-torch python3-onnx)")
        return SKIPPED
    import torch_models

    pipeforge = [pathlib.Path(argv[0]).resolve()]
    cases = argv[1:] or list(torch_models.CASES)
    failed = 0
    for name in cases:
        work = pathlib.Path(tempfile.mkdtemp(prefix=f"pf-onnx-{name}-"))
        try:
            problems, summary = check(pipeforge, name, work)
        except Exception as e:  # noqa: BLE001  (one broken case fails alone)
            problems, summary = [f"{type(e).__name__}: {e}"], "error"
        if problems:
            failed += 1
            print(f"{name}: FAILED ({summary}); files kept in {work}")
            for p in problems:
                print(f"    {p}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            print(f"{name}: ok, {summary}")
        sys.stdout.flush()
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(sys.argv[1:]))
