"""``glidein_config`` and the condor vars list: the files GlideinWMS scripts read and write (reference §8, §10).

``glidein_config`` holds ``KEY value`` lines: the value is the rest of the line after the first space (a key alone
on a line has the value ""); the last line of a key wins. Every change is also appended, as ``KEY value``, to
``<path>.history``. The bash side of the same format is ``helpers/add_config_line.source``; both replace the file
atomically (a temporary file in the same directory, then a rename), so a reader never sees a partial file.

The condor vars list has one ``NAME TYPE DEFAULT CONDOR_NAME REQUIRED EXPORT_TO_CLASSAD JOB_ENV`` line per
variable (whitespace-separated, ``#`` comments). ``CondorVars`` turns it, with glidein_config's values, into the
job environment and the ClassAd attributes, as GlideinWMS's ``condor_startup.sh`` does.
"""

import collections
import re

from cvmfs_pilot.node import atomic_file

HISTORY_SUFFIX = ".history"
TRUE_WORDS = ("true", "t", "yes", "y")
TRIM_CHARS = " \t\r\n\v\f\"'"  # what gconfig_get_trim strips: blanks and quotes
_BAD_KEY_CHARS = (" ", "\t", "\n", "\r")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


def trim(text):
    """text without surrounding blanks and quotes (bash: ``gconfig_get_trim``)."""
    return text.strip(TRIM_CHARS)


def is_true(text):
    """Whether text is a true value: TRUE, T, YES, Y (any case) or a non-zero integer (bash: ``gconfig_get_bool``)."""
    value = trim(text).lower()
    if value in TRUE_WORDS:
        return True
    return bool(_INTEGER.match(value)) and int(value) != 0


def check_key(key):
    """Refuse a key that cannot be one ``KEY value`` line's key."""
    if not isinstance(key, str) or not key or any(c in key for c in _BAD_KEY_CHARS):
        raise ValueError("glidein_config key {!r} is invalid: a key is a non-empty string without blanks or line "
                         "breaks".format(key))


def check_value(key, value):
    """value as text, refused if it is not one line."""
    text = value if isinstance(value, str) else str(value)
    if "\n" in text or "\r" in text:
        raise ValueError("the value of glidein_config key {} holds a line break: a value must be one line; join or "
                         "encode it (e.g. with ',' or base64) before adding it".format(key))
    return text


def parse_line(line):
    """(key, value) of one glidein_config line (without its newline)."""
    key, _, value = line.partition(" ")
    return key, value


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def _lines(text):
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def replace_file(path, text):
    """Write text to path atomically; the file keeps its permissions, a new one gets 0666 minus the umask."""
    atomic_file.write_atomically(path, text.encode("utf-8", "surrogateescape"))


class GlideinConfig:
    """The glidein_config file at path. Every read reads the file again: scripts change it between calls."""

    def __init__(self, path):
        self.path = str(path)
        self.history_path = self.path + HISTORY_SUFFIX

    def __repr__(self):
        return "GlideinConfig({!r})".format(self.path)

    def items(self):
        """{key: final value} (a missing file has none)."""
        values = {}
        for line in _lines(_read_text(self.path)):
            key, value = parse_line(line)
            if key:
                values[key] = value
        return values

    def get(self, key, default=None):
        """The value of the last line of key ("" for a key alone on its line), or default if there is none."""
        return self.items().get(key, default)

    def get_bool(self, key, default=False):
        """key's value as a boolean (see is_true); default if key is absent or its value is blank."""
        value = self.get(key)
        if value is None or not trim(value):
            return default
        return is_true(value)

    def add(self, key, value):
        """Set key to value (one line; non-strings are converted with str()): see update()."""
        self.update({key: value})

    def update(self, mapping):
        """Set every key of mapping (a dict or (key, value) pairs) in one atomic rewrite, then log each to .history.

        The previous lines of those keys are removed and ``KEY value`` lines appended, in mapping's order.
        Raises ValueError, before changing anything, for a bad key or a value that is not one line.
        """
        pairs = list(mapping.items() if hasattr(mapping, "items") else mapping)
        new = collections.OrderedDict()
        for key, value in pairs:
            check_key(key)
            new.pop(key, None)
            new[key] = check_value(key, value)
        if not new:
            return
        kept = [line for line in _lines(_read_text(self.path)) if parse_line(line)[0] not in new]
        added = ["{} {}".format(key, value) for key, value in new.items()]
        replace_file(self.path, "".join(line + "\n" for line in kept + added))
        with open(self.history_path, "a", encoding="utf-8", errors="surrogateescape") as history:
            history.write("".join(line + "\n" for line in added))


def create(path, initial=()):
    """Write a fresh glidein_config at path with initial (a dict or (key, value) pairs, in order; a later pair of
    the same key wins) and start its .history with the same lines. Returns the GlideinConfig."""
    pairs = list(initial.items() if hasattr(initial, "items") else initial)
    new = collections.OrderedDict()
    for key, value in pairs:
        check_key(key)
        new.pop(key, None)
        new[key] = check_value(key, value)
    text = "".join("{} {}\n".format(key, value) for key, value in new.items())
    replace_file(str(path), text)
    replace_file(str(path) + HISTORY_SUFFIX, text)
    return GlideinConfig(path)


CondorVar = collections.namedtuple("CondorVar", "name type default condor_name required export job_env")
CondorVar.__doc__ = """One condor vars line. type: S string, I integer, C expression; default "-" = none;
condor_name "+" = same as name; required and export "Y"/"N"; job_env "+" (name), "@" (condor name), "-" (none)
or an environment variable's name."""


def _unquote(text):
    """The default as condor_startup.sh's ``eval var_val=$var_def`` sees a simple word: one level of quotes off."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


class CondorVars:
    """The condor vars list at path (glidein_config's ``CONDOR_VARS_FILE``)."""

    def __init__(self, path):
        self.path = str(path)

    def __repr__(self):
        return "CondorVars({!r})".format(self.path)

    def lines(self):
        """[CondorVar] in file order (a missing file has none). ValueError for a line without exactly 7 fields."""
        variables = []
        for number, line in enumerate(_lines(_read_text(self.path)), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 7:
                raise ValueError("{}:{}: a condor vars line needs 7 fields (NAME TYPE DEFAULT CONDOR_NAME REQUIRED "
                                 "EXPORT_TO_CLASSAD JOB_ENV), this one has {}: {!r}; fix the script that wrote it"
                                 .format(self.path, number, len(fields), line))
            variables.append(CondorVar(*fields))
        return variables

    def add(self, name, var_type, default, condor_name, required, export, job_env):
        """Replace name's line (or append it), atomically (bash: ``add_condor_vars_line``)."""
        fields = (name, var_type, default, condor_name, required, export, job_env)
        for field in fields:
            if not isinstance(field, str) or not field or len(field.split()) != 1 or field != field.strip():
                raise ValueError("condor vars field {!r} of {!r} is invalid: each of the 7 fields is one word "
                                 "without blanks; use '-' for no default".format(field, name))
        kept = [line for line in _lines(_read_text(self.path)) if line.split()[:1] != [name]]
        replace_file(self.path, "".join(line + "\n" for line in kept + [" ".join(fields)]))

    def resolved(self, glidein_config):
        """[(CondorVar, condor name, value)] of the variables that get a value, as condor_startup.sh's set_var.

        A variable's value is glidein_config's, or when that is absent or blank the DEFAULT (unless ``-``: the
        variable is then not set). A REQUIRED (``Y``) variable with no value in glidein_config is an error whatever
        its default, as in condor_startup.sh: ValueError naming it.
        """
        values = glidein_config.items() if isinstance(glidein_config, GlideinConfig) else dict(glidein_config)
        result = []
        for var in self.lines():
            value = values.get(var.name)
            if value is None or not value.strip():
                if var.required.upper() == "Y":
                    raise ValueError("condor vars: {} is required (REQUIRED=Y in {}) but glidein_config has no value "
                                     "for it; the script or attribute that should set it did not run or failed"
                                     .format(var.name, self.path))
                if var.default == "-":
                    continue
                value = _unquote(var.default)
            condor_name = var.name if var.condor_name == "+" else var.condor_name
            result.append((var, condor_name, value))
        return result

    def job_environment(self, glidein_config):
        """{environment variable: value} for the lines whose JOB_ENV is not ``-``.

        ``+`` uses NAME, ``@`` the HTCondor name (CONDOR_NAME, where ``+`` means NAME), anything else is the
        variable's name itself.
        """
        environment = {}
        for var, condor_name, value in self.resolved(glidein_config):
            if var.job_env == "-":
                continue
            name = {"+": var.name, "@": condor_name}.get(var.job_env, var.job_env)
            environment[name] = value
        return environment

    def classad_attributes(self, glidein_config):
        """{attribute (the HTCondor name): value} for the lines with EXPORT_TO_CLASSAD ``Y``.

        Typed by TYPE: ``S`` a str, ``I`` an int (ValueError if the value is not an integer), ``C`` (or another
        type) the expression's text.
        """
        attributes = {}
        for var, condor_name, value in self.resolved(glidein_config):
            if var.export.upper() != "Y":
                continue
            if var.type.upper() == "I":
                if not _INTEGER.match(value.strip()):
                    raise ValueError("condor vars: {} has type I but its value {!r} is not an integer; fix the "
                                     "attribute or declare it S or C in {}".format(var.name, value, self.path))
                attributes[condor_name] = int(value.strip())
            else:
                attributes[condor_name] = value
        return attributes
