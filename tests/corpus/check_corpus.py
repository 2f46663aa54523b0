#!/usr/bin/env python3
"""Runs `pipeforge check` on every broken model and on generated binary junk.

Each must end with exit status 1 and a located error: `file:line:col: error:
message`, the quoted source line, and a caret under the column -- never a
crash, a hang, or a sanitizer report. For the checked-in files the first line
must equal the one recorded in expected.txt.

usage: check_corpus.py PIPEFORGE
"""
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOCATED = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$")


def run(pipeforge, path):
    proc = subprocess.run([pipeforge, "check", path], capture_output=True, timeout=60)
    return proc.returncode, proc.stderr.decode("utf-8", errors="replace")


def check_located(path, code, err):
    """Returns a list of problems with one run's outcome."""
    problems = []
    if code != 1:
        problems.append(f"exit status {code}, expected 1")
    lines = err.splitlines()
    if not lines:
        return problems + ["no message"]
    m = LOCATED.match(lines[0])
    if not m:
        return problems + [f"first line is not located: {lines[0]!r}"]
    if len(lines) < 3:
        return problems + ["no quoted line and caret"]
    caret = lines[2]
    if caret.rstrip() != caret or not caret.endswith("^") or caret.strip(" \t") != "^":
        problems.append(f"third line is not a caret: {caret!r}")
    # The caret sits under the column (tabs are copied, other bytes are one column).
    if len(caret) != int(m["col"]):
        problems.append(f"caret at column {len(caret)}, message says {m['col']}")
    if "Sanitizer" in err or "runtime error" in err:
        problems.append("sanitizer report")
    return problems


def junk_cases():
    """Deterministic binary junk: random bytes, a valid prefix then noise, NULs."""
    rng = random.Random(1234)
    prefix = b"dim B = 2\ngraph @g(%x: f32[B]) -> f32[B] {\n  %y = relu %x : f32[B]\n"
    cases = {
        "junk_random.pf": bytes(rng.randrange(256) for _ in range(512)),
        "junk_prefix_noise.pf": prefix + bytes(rng.randrange(256) for _ in range(64)),
        "junk_nul.pf": prefix.replace(b"relu", b"re\x00lu"),
        "junk_latin1.pf": prefix + b"  return %\xe9\n}\n",
        "junk_ascii_soup.pf": bytes(rng.choice(b"%@[](){}=,:-*/ abcf32B0123456789\n") for _ in range(2000)),
    }
    for i in range(20):
        cases[f"junk_mutation_{i:02d}.pf"] = bytes(
            b if rng.random() > 0.05 else rng.randrange(256) for b in prefix + b"  return %y\n}\n")
    return cases


def main():
    pipeforge = os.path.abspath(sys.argv[1])
    broken = os.path.join(HERE, "broken")
    expected = {}
    with open(os.path.join(HERE, "expected.txt"), encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, message = line.rstrip("\n").split(" ", 1)
                expected[name] = message
    failures = 0
    names = sorted(os.listdir(broken))
    for name in names:
        code, err = run(pipeforge, os.path.join(broken, name))
        problems = check_located(name, code, err)
        first = err.splitlines()[0] if err else ""
        want = expected.get(name)
        if want is None:
            problems.append("no entry in expected.txt")
        elif first != f"{os.path.join(broken, name)}:{want}":
            problems.append(f"message {first!r}, expected ...{want!r}")
        if problems:
            failures += 1
            print(f"FAIL {name}: " + "; ".join(problems))
    for name in sorted(set(expected) - set(names)):
        failures += 1
        print(f"FAIL {name}: listed in expected.txt but missing")

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in junk_cases().items():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            code, err = run(pipeforge, path)
            problems = check_located(name, code, err)
            if problems:
                failures += 1
                print(f"FAIL {name}: " + "; ".join(problems))
    total = len(names) + len(junk_cases())
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
