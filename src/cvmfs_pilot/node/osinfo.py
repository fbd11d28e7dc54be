"""Which platform a node is, from the text of ``/etc/os-release`` (pure logic, no file access).

A platform id names the client builds a node can run: ``el7`` .. ``el10`` for Red Hat Enterprise Linux and its
rebuilds (ID or ID_LIKE rhel/centos/fedora), ``suse15`` (SLES, openSUSE Leap), ``debian11`` .. ``debian13``,
``ubuntu22``, ``ubuntu24``. Debian and Ubuntu have no upstream cvmfs2 build of their own in a client
distribution; as cvmfsexec does, they run the el8 (Debian 11) or el9 build.
"""

import shlex

SUPPORTED_MAJORS = {
    "el": (7, 8, 9, 10),
    "suse": (15,),
    "debian": (11, 12, 13),
    "ubuntu": (22, 24),
}
RHEL_LIKE = ("rhel", "centos", "fedora")
SUSE_IDS = ("sles", "sled", "opensuse-leap", "suse")
# platform -> the platforms of the cvmfs2 builds it can run, best first
BORROWED_BUILDS = {"debian11": ("el8",), "debian12": ("el9",), "debian13": ("el9",),
                   "ubuntu22": ("el9",), "ubuntu24": ("el9",)}


def parse_os_release(text):
    """The KEY=value pairs of an os-release file, with shell quoting removed; lines that do not parse are
    skipped."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        fields[key.strip()] = words[0] if words else ""
    return fields


def family_of(fields):
    """"el", "suse", "debian", "ubuntu", or None for other systems."""
    ids = [fields.get("ID", "").lower()] + fields.get("ID_LIKE", "").lower().split()
    if ids[0] in ("debian", "ubuntu"):
        return ids[0]  # derivatives (ID_LIKE=debian/ubuntu) number their versions differently
    if any(name in RHEL_LIKE for name in ids):
        return "el"
    if any(name in SUSE_IDS or name.startswith("opensuse") for name in ids):
        return "suse"
    return None


def major_version(fields):
    """The leading number of VERSION_ID ("9.4" -> 9, "24.04" -> 24), or None."""
    head = fields.get("VERSION_ID", "").split(".")[0]
    return int(head) if head.isdigit() else None


def platform_of(fields):
    """The platform id of parsed os-release fields, or None when the system is not one we have builds for."""
    family, major = family_of(fields), major_version(fields)
    if family is None or major not in SUPPORTED_MAJORS[family]:
        return None
    return "{}{}".format(family, major)


def build_platforms(platform):
    """The platforms whose cvmfs2 builds run on ``platform``, best first (empty for None)."""
    if platform is None:
        return ()
    return BORROWED_BUILDS.get(platform, (platform,))
