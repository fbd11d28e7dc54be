"""What real tools see of a directory tree, as JSON on stdout: ``python tree_probe.py DIR [--readers N]``.

Tests run it on a source tree and on its mounted copy (as the unprivileged user, possibly inside a user
namespace) and compare. Fields: ``find``, ``ls`` (``ls -lRn``), ``stat``, ``tar`` (sha256 of ``tar cf -``),
``sha256`` (sha256sum of every file), ``walk`` (os.walk), ``links`` (readlink), ``hardlinks`` (paths sharing an
inode), ``xattrs`` (user.* of files and directories); with ``--readers N`` also ``readers``: the sha256sum
output of N concurrent processes each reading every file, in different orders.

Directory sizes are left out (CernVM-FS reports 4096, local file systems what their layout takes), and so are
``total`` block counts.
"""

import hashlib
import json
import os
import subprocess
import sys


def run(command, cwd, **kwargs):
    return subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, check=True, **kwargs).stdout


def text(command, cwd):
    return run(command, cwd).decode("utf-8", "surrogateescape")


def find(root):
    lines = []
    for line in text(["find", ".", "-printf", "%p|%y|%m|%s|%T@|%n|%l\\n"], root).splitlines():
        path, kind, mode, size, mtime, nlink, target = line.split("|")
        lines.append("|".join([path, kind, mode, "-" if kind == "d" else size, mtime, nlink, target]))
    return sorted(lines)


def ls(root):
    lines = []
    for line in text(["ls", "-lRn", "--time-style=full-iso", "."], root).splitlines():
        if line.startswith("total "):
            continue
        fields = line.split(None, 8)  # mode links uid gid size date time zone name (column widths vary)
        if len(fields) == 9 and fields[0].startswith("d"):
            fields[4] = "-"
        lines.append(" ".join(fields))
    return lines


def stat_all(root):
    out = run("find . -print0 | sort -z | xargs -0 stat -c '%n|%F|%a|%s|%h|%u|%g|%Y'", root, shell=True)
    lines = []
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        fields = line.split("|")
        if fields[1] == "directory":
            fields[3] = "-"
        lines.append("|".join(fields))
    return lines


def sha256sums(root, order=None):
    files = order if order is not None else files_of(root)
    out = run(["xargs", "-0", "sha256sum", "--"], root, input=b"\0".join(files))
    return sorted(out.decode("utf-8", "surrogateescape").splitlines())


def files_of(root):
    return sorted(run(["find", ".", "-type", "f", "-print0"], root).split(b"\0")[:-1])


def readers(root, count):
    """sha256sum of every file by ``count`` processes at once, each starting at a different file."""
    files = files_of(root)
    processes = []
    for i in range(count):
        shift = i * len(files) // count
        order = files[shift:] + files[:shift]
        processes.append(subprocess.Popen(["xargs", "-0", "sha256sum", "--"], cwd=root, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE))
        processes[-1].stdin.write(b"\0".join(order))
        processes[-1].stdin.close()
    outputs = []
    for process in processes:
        outputs.append(sorted(process.stdout.read().decode("utf-8", "surrogateescape").splitlines()))
        process.wait()
        if process.returncode != 0:
            raise SystemExit("a concurrent reader failed with status {}".format(process.returncode))
    return outputs


def walk(root):
    return [[os.path.relpath(dirpath, root), sorted(dirnames), sorted(filenames)]
            for dirpath, dirnames, filenames in sorted(os.walk(root))]


def links_and_inodes(root):
    links, inodes, xattrs = {}, {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ([] if dirpath != root else ["."]):
            full = os.path.normpath(os.path.join(dirpath, name))
            relative = os.path.relpath(full, root)
            info = os.lstat(full)
            if os.path.islink(full):
                links[relative] = os.readlink(full)
                continue
            if info.st_nlink > 1 and not os.path.isdir(full):
                inodes.setdefault((info.st_dev, info.st_ino), []).append(relative)
            values = {}
            for key in os.listxattr(full):
                if key.startswith("user."):
                    values[key] = os.getxattr(full, key).decode("utf-8", "backslashreplace")
            xattrs[relative] = values
    hardlinks = sorted(sorted(paths) for paths in inodes.values())
    return links, hardlinks, xattrs


def probe(root, reader_count=0):
    tar = run(["tar", "-cf", "-", "--sort=name", "."], root)
    links, hardlinks, xattrs = links_and_inodes(root)
    result = dict(find=find(root), ls=ls(root), stat=stat_all(root), tar=hashlib.sha256(tar).hexdigest(),
                  sha256=sha256sums(root), walk=walk(root), links=links, hardlinks=hardlinks, xattrs=xattrs)
    if reader_count:
        result["readers"] = readers(root, reader_count)
    return result


if __name__ == "__main__":
    count = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--readers" else 0
    json.dump(probe(sys.argv[1], count), sys.stdout)
