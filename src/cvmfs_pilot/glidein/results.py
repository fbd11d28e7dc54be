"""What validation scripts report through error_gen (``helpers/error_gen``), and the failure class it implies.

error_gen appends one JSON object per line to the file named by ``CVMFS_PILOT_RESULTS``::

    {"script": NAME, "status": "ok"|"error", "type": TYPE|null, "detail": DETAIL|null, "values": {KEY: VALUE}}

A script fails by its exit status alone (as in GlideinWMS); what it recorded only says why. ``classify`` maps a
failed script to the pilot's failure classes (docs/glidein.md, "The report and exit codes"):

==========================================================  ==========
recorded error TYPE                                         class
==========================================================  ==========
``WN_Resource``, ``Network``                                ``site``: the node or the site is the problem
``Config``, ``Corruption``, ``VO_Config``, ``VO_Proxy``     ``config``: the pilot's or the VO's configuration
``Other`` or any other TYPE                                 ``config``
no error recorded (nothing, or only ``-ok``)                ``config``
==========================================================  ==========
"""

import json
import logging

SITE = "site"
CONFIG = "config"
SITE_TYPES = ("WN_Resource", "Network")
CONFIG_TYPES = ("Config", "Corruption", "VO_Config", "VO_Proxy")
STATUSES = ("ok", "error")

log = logging.getLogger(__name__)


def _problem(record):
    """Why a decoded line is not a result, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("script"), str):
        return "no \"script\" string"
    if record.get("status") not in STATUSES:
        return "\"status\" is not \"ok\" or \"error\""
    for field in ("type", "detail"):
        if record.get(field) is not None and not isinstance(record.get(field), str):
            return "\"{}\" is neither a string nor null".format(field)
    if not isinstance(record.get("values", {}), dict):
        return "\"values\" is not an object"
    return None


def read_results(path, problems=None):
    """[result dict] of the results file at path, in order ([] if it does not exist).

    Malformed lines are skipped; each is reported as "path:line: why" in the list problems when one is given,
    else as a logging warning. Blank lines are ignored. Every result has "type", "detail" (None when absent) and
    "values" ({} when absent).
    """
    try:
        with open(str(path), "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return []
    results = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        try:
            record = json.loads(text)
            why = _problem(record)
        except ValueError as error:
            why = "not JSON ({})".format(error)
        if why:
            message = "{}:{}: malformed result line skipped: {}: {!r}".format(path, number, why, text[:200])
            if problems is None:
                log.warning("%s", message)
            else:
                problems.append(message)
            continue
        record.setdefault("type", None)
        record.setdefault("detail", None)
        record.setdefault("values", {})
        results.append(record)
    return results


def failure_class(error_type):
    """The failure class of a recorded error TYPE (see the table above)."""
    return SITE if error_type in SITE_TYPES else CONFIG


def _describe(result):
    text = "{} reported {}".format(result["script"], result["type"] or "an error")
    if result["detail"]:
        text += ": " + result["detail"]
    if result["values"]:
        text += " (" + ", ".join("{}={}".format(k, v) for k, v in sorted(result["values"].items())) + ")"
    return text


def classify(results, exit_status, script=None):
    """(failure class, detail message) of a script that ended with exit_status; (None, None) if it is 0.

    results: what that script recorded (the records appended to the results file while it ran); the last
    ``error`` record decides. exit_status: its exit status, negative for a signal (subprocess's returncode).
    script: its file name, for the message when it recorded no error.
    """
    if exit_status == 0:
        return None, None
    errors = [result for result in results if result.get("status") == "error"]
    if errors:
        last = errors[-1]
        return failure_class(last.get("type")), _describe(dict({"type": None, "detail": None, "values": {}}, **last))
    name = script or (results[-1]["script"] if results else "the script")
    if exit_status < 0:
        how = "was killed by signal {}".format(-exit_status)
    else:
        how = "exited with status {}".format(exit_status)
    return CONFIG, "{} {} without reporting an error through error_gen".format(name, how)
