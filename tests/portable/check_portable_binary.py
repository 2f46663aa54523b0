#!/usr/bin/env python3
"""Checks that a binary built for baseline x86-64 runs on any x86-64 CPU.

Pipeforge compiles its hot kernels once per instruction set and chooses one
at run time (backends/cpu/cpu_isa.h); everything else is baseline x86-64.
This lists every function of BINARY (objdump) that uses an instruction from
beyond the baseline: VEX/EVEX-encoded ones (AVX, AVX2, FMA, AVX-512, whose
mnemonics start with 'v', or use the mask registers), and the BMI ones. Each
must belong to code that only runs after the CPU check: the per-set kernel
families (namespaces isa_avx2, isa_avx512) and the own sgemms (the bf16
one's and the AMX one's too, and the products of a few rows, whose AVX2 and AVX-512 copies
are templates over 8- and 16-float vectors). Anything else would die with an illegal instruction on an older
CPU; the check names it.

usage: check_portable_binary.py BINARY
"""
import re
import subprocess
import sys

# Functions reached only where cpu_isa() allows their instruction set.
ALLOWED = re.compile(r"isa_avx2::|isa_avx512::|Avx2Tile|Avx512Tile|avx512_tile::|bf16_tile::|bf16_pairs::|amx_tile::|"
                     r"sgemm_avx2\(|sgemm_avx512\(|sgemm_bf16\(|sgemm_amx_bf16\(|sgemm_few_rows_avx2\(|sgemm_few_rows_avx512\(|"
                     r"few_rows_[a-z_]+<float __vector\((8|16)\)[,>]")
BEYOND_BASELINE = re.compile(r"^(v[a-z0-9]+|k(mov|and|or|xor|not|shift|test|unpck|add)[a-z0-9]*|"
                             r"andn|bextr|blsi|blsmsk|blsr|bzhi|pdep|pext|rorx|sarx|shlx|shrx|"
                             r"ldtilecfg|sttilecfg|tile[a-z]+|tdp[a-z0-9]+)$")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", sys.argv[1]], check=True,
                         capture_output=True, text=True).stdout
    function, offenders, checked = None, {}, 0
    for line in out.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
            checked += 1
            continue
        parts = line.split("\t")
        if function is None or len(parts) < 2:
            continue
        mnemonic = parts[1].split()[0] if parts[1].split() else ""
        if BEYOND_BASELINE.match(mnemonic) and not ALLOWED.search(function):
            offenders.setdefault(function, mnemonic)
    if checked == 0:
        print(f"{sys.argv[1]}: objdump listed no functions", file=sys.stderr)
        return 1
    if offenders:
        print(f"{sys.argv[1]}: {len(offenders)} functions use instructions beyond baseline x86-64 outside the "
              "code dispatched at run time (built with -march=native? see PF_NATIVE):", file=sys.stderr)
        for name, mnemonic in sorted(offenders.items())[:40]:
            print(f"  {mnemonic:10} {name[:160]}", file=sys.stderr)
        return 1
    print(f"{sys.argv[1]}: {checked} functions, baseline x86-64 outside the dispatched kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
