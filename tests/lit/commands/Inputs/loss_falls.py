"""Reads `pipeforge run`'s output and says whether its loss falls from the start.

    pipeforge run ... | loss_falls.py NAME

Prints "NAME: the loss falls" when the last step's loss is below the
first's and no step's is above 1.5 times the first's; otherwise a line that
says which rule failed, with the losses, and exits 1.
"""

import re
import sys


def main(argv):
    name = argv[1]
    losses = [float(m.group(1)) for m in re.finditer(r"^step\s+\d+\s+loss (\S+)", sys.stdin.read(), re.MULTILINE)]
    if len(losses) < 2:
        print(f"{name}: {len(losses)} step lines")
        return 1
    first, last, highest = losses[0], losses[-1], max(losses)
    shown = " ".join(f"{x:.3f}" for x in losses)
    if not last < first:
        print(f"{name}: the loss ends at {last:.4f}, not below its first {first:.4f}: {shown}")
        return 1
    if highest > 1.5 * first:
        print(f"{name}: the loss rises to {highest:.4f}, above 1.5 x its first {first:.4f}: {shown}")
        return 1
    print(f"{name}: the loss falls")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
