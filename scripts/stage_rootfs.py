#!/usr/bin/env python3
"""Stages the root filesystem of a FROM-scratch image: the given executables
and directory trees, every shared library they load (as `ldd` resolves them
on this machine, so the image runs the very libraries the binary was built and
tested against), and the few /etc files a program without a distribution
needs: passwd and group naming the non-root user 65532, and nsswitch.conf so
glibc resolves names (`etcd-0.etcd`) from /etc/hosts, then DNS — both files
the container engine or the kubelet mounts. No shell, no package manager.

    stage_rootfs.py OUT --file SRC=DEST ... [--tree SRC=DEST ...] [--exclude NAME ...]

OUT/rootfs is the tree an image COPYs; OUT/CONTENTS lists every file in it
with its size, and where it came from.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

NONROOT = 65532

ETC_FILES = {
    "etc/passwd": f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n",
    "etc/group": f"root:x:0:\nnonroot:x:{NONROOT}:\n",
    # glibc reads this to choose where names come from: /etc/hosts, then DNS,
    # stated rather than left to its built-in default. /etc/hosts and
    # /etc/resolv.conf are the engine's (or the kubelet's) to mount.
    "etc/nsswitch.conf": "hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\n",
}

LDD_LINE = re.compile(r"^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$")


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def shared_libraries(path):
    """The absolute paths `ldd` loads for path: the interpreter and every
    library, as named in the binary's search (not their symlink targets)."""
    result = subprocess.run(["ldd", path], capture_output=True, text=True)
    if result.returncode != 0:
        if "not a dynamic executable" in result.stdout + result.stderr:
            return []
        sys.exit(f"stage_rootfs: ldd {path} failed: {result.stderr.strip()}")
    libraries = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            sys.exit(f"stage_rootfs: {path} needs a library this machine lacks: {line.strip()}")
        match = LDD_LINE.match(line)
        if match:
            libraries.append(match.group(1))
    return libraries


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="directory to (re)create; the tree goes to OUT/rootfs")
    parser.add_argument("--file", action="append", default=[], metavar="SRC=DEST", help="a file, e.g. an executable")
    parser.add_argument("--tree", action="append", default=[], metavar="SRC=DEST", help="a directory, copied whole")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME", help="a directory name a --tree skips")
    args = parser.parse_args()

    rootfs = os.path.join(args.out, "rootfs")
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(rootfs)
    origin = {}  # path in the image -> where it came from
    elves = []

    def place(source, dest):
        target = os.path.join(rootfs, dest.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(source), target)
        origin["/" + dest.lstrip("/")] = source
        if is_elf(target):
            elves.append(target)

    for spec in args.file:
        source, _, dest = spec.partition("=")
        place(source, dest or source)
    for spec in args.tree:
        source, _, dest = spec.partition("=")
        for directory, subdirs, files in os.walk(source):
            subdirs[:] = [d for d in subdirs if d not in args.exclude and d != "__pycache__"]
            for name in files:
                path = os.path.join(directory, name)
                place(path, os.path.join(dest or source, os.path.relpath(path, source)))
    for elf in elves:
        for library in shared_libraries(elf):
            if "/" + library.lstrip("/") not in origin:
                place(library, library)
    for dest, text in ETC_FILES.items():
        os.makedirs(os.path.join(rootfs, os.path.dirname(dest)), exist_ok=True)
        with open(os.path.join(rootfs, dest), "w") as f:
            f.write(text)
        origin["/" + dest] = "written by stage_rootfs.py"
    # Where a non-root program may write is the mounted volumes' business:
    # the root filesystem is read-only. /tmp exists for tools that expect it.
    os.makedirs(os.path.join(rootfs, "tmp"), exist_ok=True)

    total = 0
    with open(os.path.join(args.out, "CONTENTS"), "w") as f:
        for dest in sorted(origin):
            size = os.path.getsize(os.path.join(rootfs, dest.lstrip("/")))
            total += size
            f.write(f"{size:>10}  {dest}  <- {origin[dest]}\n")
        f.write(f"{total:>10}  total, {len(origin)} files\n")
    print(f"stage_rootfs: {len(origin)} files, {total / 1e6:.1f} MB in {rootfs}")


if __name__ == "__main__":
    main()
