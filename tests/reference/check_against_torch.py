"""Checks that Pipeforge computes PyTorch's loss and gradients.

Usage:
    /usr/bin/python3 tests/reference/check_against_torch.py PIPEFORGE [CASE...]

PIPEFORGE is the `pipeforge` binary; the cases (default: all) are those of
torch_reference.py (mlp: examples/mlp.pf, gpt: examples/gpt.pf, bound to
small dimensions). For each case it writes the reference fixture into a
temporary directory (torch_reference.generate), runs

    PIPEFORGE run MODEL.pf --steps 1 --batch B --bind ... --optimizer sgd --lr 0 --clip 0
        --init-from W.safetensors --data D.safetensors
        --save-grads G.safetensors --threads 1

and compares the printed `loss <value>` and every tensor of G.safetensors with
the float64 reference. The error of a tensor is max|a - b| / max(max|b|, TINY)
with a = Pipeforge, b = reference: relative to the tensor's largest entry, so
entries that are zero in exact arithmetic (the key bias's gradient in
attention) do not count as huge relative errors. A case passes when the loss
and every gradient are within TOLERANCE (1e-4) and G holds exactly the model's
parameters. It prints one line per case (the worst tensor and its error) and
then "N passed, M failed"; on a failure the case's directory is kept and named.

Exit status: 0 all passed, 1 any failed, 77 skipped (ctest's SKIP_RETURN_CODE)
when torch or numpy cannot be imported.

Run it with /usr/bin/python3: it needs Debian's python3-torch and
python3-numpy, and the first python3 on PATH may be another interpreter (a
pyenv one) without them. Started by another interpreter that lacks torch, it
re-executes itself under /usr/bin/python3 once before skipping.
"""

import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

TOLERANCE = 1e-4
TINY = 1e-12  # a reference tensor smaller than this everywhere counts as zero
TIMEOUT_S = 600  # one step of these small models takes well under a second
SKIPPED = 77

SYSTEM_PYTHON = "/usr/bin/python3"
REEXEC_GUARD = "PF_TORCH_REFERENCE_REEXEC"  # set once we re-executed, so it happens at most once

HERE = pathlib.Path(__file__).resolve().parent


def import_torch_or_skip():
    """Returns when torch and numpy import; otherwise re-executes under
    /usr/bin/python3 (once) or exits with the skip status."""
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    if (os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)
            and REEXEC_GUARD not in os.environ):
        os.environ[REEXEC_GUARD] = "1"
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, str(pathlib.Path(__file__).resolve())] + sys.argv[1:])
    print("skipped: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(SKIPPED)


def parse_loss(stdout):
    """The number after "loss" ("loss 5.54", "loss=5.54") on the first line
    of `stdout` that has one, or None. "nan" and "inf" parse, so they fail
    the comparison loudly; a table header ("step  loss  lr") is passed over."""
    for line in stdout.splitlines():
        match = re.search(r"\bloss[\s=:]+([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|nan|inf))", line, re.IGNORECASE)
        if match:
            return float(match.group(1))
    return None


def tensor_error(actual, expected):
    """max|a - b| / max(max|b|, TINY), in float64; inf when a is not finite."""
    import numpy as np

    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), TINY))


def tail(text, lines=15):
    """The last few lines of `text`, indented, for a failure message."""
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)


def check_case(pipeforge, case_name, work_dir):
    """Runs one case in `work_dir`. Returns (passed, one-line summary, details)."""
    import safetensors_io
    import torch_reference

    case = torch_reference.CASES[case_name]
    torch_reference.generate(case_name, work_dir)
    expected, metadata = safetensors_io.load(work_dir / "expected.safetensors")
    expected_loss = float(metadata["loss"])

    command = case.pipeforge_args(pipeforge, work_dir)
    shown = "    " + " ".join(command)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"pipeforge did not finish within {TIMEOUT_S} s", shown
    except OSError as e:
        return False, f"cannot run pipeforge: {e}", shown
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return False, f"pipeforge exited with status {result.returncode}", f"{shown}\n{tail(output)}"

    loss = parse_loss(result.stdout)
    if loss is None:
        return False, "pipeforge printed no `loss <value>`", f"{shown}\n{tail(output)}"
    grads_path = work_dir / "G.safetensors"
    if not grads_path.exists():
        return False, f"pipeforge wrote no {grads_path.name}", shown
    try:
        grads, _ = safetensors_io.load(grads_path)
    except ValueError as e:
        return False, f"cannot read {grads_path.name}: {e}", shown

    problems = []
    missing = sorted(set(expected) - set(grads))
    unexpected = sorted(set(grads) - set(expected))
    if missing:
        problems.append(f"missing gradients: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")

    loss_error = abs(loss - expected_loss) / max(abs(expected_loss), TINY) if math.isfinite(loss) else math.inf
    if not loss_error <= TOLERANCE:
        problems.append(f"loss {loss!r}, expected {expected_loss!r} (error {loss_error:.2e})")

    errors = {}
    for name in sorted(set(expected) & set(grads)):
        if grads[name].shape != expected[name].shape:
            problems.append(f"{name} has shape {list(grads[name].shape)}, expected {list(expected[name].shape)}")
            continue
        errors[name] = tensor_error(grads[name], expected[name])
    bad = sorted((n for n, e in errors.items() if not e <= TOLERANCE), key=lambda n: -errors[n])
    problems += [f"{n}: error {errors[n]:.2e}" for n in bad]

    worst = max(errors, key=errors.get) if errors else None
    worst_text = f"worst {worst} {errors[worst]:.2e}" if worst else "no gradients compared"
    summary = (f"loss {loss:.6f} vs {expected_loss:.6f} (error {loss_error:.2e}), "
               f"{len(errors)}/{len(expected)} gradients, {worst_text}")
    return not problems, summary, "\n".join("    " + p for p in problems)


def main(argv):
    if len(argv) < 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    import_torch_or_skip()
    sys.path.insert(0, str(HERE))
    import torch_reference

    pipeforge = pathlib.Path(argv[0]).resolve()
    cases = argv[1:] or list(torch_reference.CASES)
    unknown = [c for c in cases if c not in torch_reference.CASES]
    if unknown:
        print(f"unknown case {', '.join(unknown)}; known: {', '.join(torch_reference.CASES)}")
        return 2
    if not os.access(pipeforge, os.X_OK):
        print(f"{pipeforge}: not an executable file")
        return 1

    passed = failed = 0
    for name in cases:
        work_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"pf-torch-ref-{name}-"))
        try:
            ok, summary, details = check_case(pipeforge, name, work_dir)
        except Exception as e:  # noqa: BLE001  (a broken fixture fails this case, not the whole run)
            ok, summary, details = False, f"error: {type(e).__name__}: {e}", ""
        if ok:
            passed += 1
            shutil.rmtree(work_dir, ignore_errors=True)
            print(f"{name}: ok, {summary}")
        else:
            failed += 1
            print(f"{name}: FAILED, {summary} (files kept in {work_dir})")
            if details:
                print(details)
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
