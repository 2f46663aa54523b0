"""Goes on from a checkpoint for two more steps: runs PF launch PLAN -- --resume CK --steps S+2 [FLAGS...].

    resume.py PF PLAN CK FLAGS...      S is the step the checkpoint CK was written at.
"""

import json
import os
import subprocess
import sys


def main(argv):
    pf, plan, ck = argv[1], argv[2], argv[3]
    with open(os.path.join(ck, "index.json")) as f:
        step = int(json.load(f)["step"])
    done = subprocess.run([pf, "launch", plan, "--", "--resume", ck, "--steps", str(step + 2)] + argv[4:])
    sys.exit(done.returncode)


if __name__ == "__main__":
    main(sys.argv)
