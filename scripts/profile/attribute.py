#!/usr/bin/env python3
"""Where the instructions of a benchmark go, per function.

Reads a QEMU log written with `-d in_asm,exec,nochain` (every executed
translation block is logged, and every block's instructions once, when it
is translated) and attributes each executed block's instructions to the
function that contains it: EL2 blocks to `hyp`'s symbols, EL0 blocks to the
root task's (`init`, which also runs the VMM servers), EL1 blocks to the
test guest's. The run is cut into windows at every EL1 (or EL0, see
`--marker`) block that reads `PMCCNTR_EL0`: the benchmarks read the counter
before and after each measured operation, so the windows alternate between
the operations and the loop around them. Windows of similar length are
grouped; for the median window of each large group the script prints the
instructions per function, and with `--detail N` it lists, for the window
closest to N instructions, every executed block with its source line and
inlining chain (`llvm-addr2line`).

This is a development tool (`scripts/profile/run`), not part of the tests:
QEMU's log of one guest benchmark boot is about 1.3 GB.

usage: attribute.py LOG HYP_ELF INIT_ELF [GUEST_ELF] [--marker el0|el1]
                    [--detail INSTRUCTIONS]
"""
import argparse
import bisect
import collections
import re
import subprocess

parser = argparse.ArgumentParser()
parser.add_argument("log")
parser.add_argument("hyp_elf")
parser.add_argument("init_elf")
parser.add_argument("guest_elf", nargs="?")
parser.add_argument("--marker", default="el1", choices=["el0", "el1"])
parser.add_argument("--detail", type=int, default=0)
arguments = parser.parse_args()


def symbols(path):
    """(sorted addresses, names) of the function symbols of an ELF file."""
    listing = subprocess.run(
        ["llvm-nm", "-n", "-C", path], capture_output=True, text=True, check=True
    ).stdout
    addresses, names = [], []
    for line in listing.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            addresses.append(int(parts[0], 16))
            names.append(re.sub(r"::h[0-9a-f]{16}$", "", parts[2]))
    return addresses, names


tables = {"el2": symbols(arguments.hyp_elf), "el0": symbols(arguments.init_elf)}
if arguments.guest_elf:
    tables["el1"] = symbols(arguments.guest_elf)


def function(level, pc):
    table = tables.get(level)
    if not table:
        return f"{level}:{pc:#x}"
    index = bisect.bisect_right(table[0], pc) - 1
    return f"{level}:{table[1][index]}" if index >= 0 else f"{level}:{pc:#x}"


def level_of(flags):
    # The exception level as QEMU's AArch64 TB flags carry it for the
    # configurations the benchmarks run (EL0 with HCR_EL2.TGE, guest EL1);
    # anything else is EL2.
    return {0x101: "el0", 0x121: "el1"}.get(flags, "el2")


blocks = {}  # host address of a translated block -> (instructions, reads counter)
windows, details = [], []
current, detail = collections.Counter(), []
with open(arguments.log, errors="replace") as log:
    translating, first_pc, count, reads_counter, translated = False, None, 0, False, None
    for line in log:
        if line.startswith("IN:"):
            translating, first_pc, count, reads_counter = True, None, 0, False
            continue
        if translating:
            if line.startswith("0x"):
                if first_pc is None:
                    first_pc = int(line.split(":")[0], 16)
                count += 1
                reads_counter |= "mrs" in line and "pmccntr_el0" in line
                continue
            if not line.strip():
                translating = False
                translated = (first_pc, count, reads_counter)
                continue
        if line.startswith("Trace"):
            parts = line.split()
            fields = parts[3].strip("[]").split("/")
            pc, flags = int(fields[1], 16), int(fields[2], 16)
            if translated and translated[0] == pc:
                blocks[parts[2]] = translated[1:]
                translated = None
            instructions, marker = blocks.get(parts[2], (1, False))
            level = level_of(flags)
            current[function(level, pc)] += instructions
            detail.append((level, pc, instructions))
            if marker and level == arguments.marker:
                windows.append(current)
                details.append(detail)
                current, detail = collections.Counter(), []

print(f"{len(windows)} windows")
groups = collections.defaultdict(list)
for window in windows:
    total = sum(window.values())
    groups[total // 50].append((total, window))
for key in sorted(groups, key=lambda key: -len(groups[key]))[:6]:
    members = sorted(groups[key], key=lambda member: member[0])
    total, window = members[len(members) // 2]
    print(f"\n=== {len(members)} windows, median {total} instructions ===")
    for name, instructions in window.most_common(40):
        print(f"{instructions:6d}  {name}")

if arguments.detail:
    best = min(
        range(len(windows)),
        key=lambda index: abs(sum(windows[index].values()) - arguments.detail),
    )
    print(f"\n=== every block of window {best} ({sum(windows[best].values())} instructions) ===")
    where = {}
    for pc in sorted({pc for level, pc, _ in details[best] if level == "el2"}):
        lines = subprocess.run(
            ["llvm-addr2line", "-f", "-i", "-C", "-s", "-e", arguments.hyp_elf, hex(pc)],
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        frames = [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2)]
        where[pc] = " <- ".join(
            f"{re.sub(r'<.*>', '', name).split('::')[-1]}@{place}" for name, place in frames[:3]
        )
    for level, pc, instructions in details[best]:
        print(f"{instructions:4d} {level} {pc:#x} {where.get(pc) or function(level, pc)}")
