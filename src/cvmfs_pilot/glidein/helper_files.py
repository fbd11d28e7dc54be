"""The GlideinWMS helper files scripts use (reference §10), shipped as package data in ``glidein/helpers/``.

They are read with pkgutil.get_data, which also works when the package runs from a zipapp, and copied to a
directory on disk, where scripts can source or run them.
"""

import os
import pkgutil

PACKAGE = "cvmfs_pilot.glidein"
ADD_CONFIG_LINE = "add_config_line.source"
GET_ID_SELECTORS = "get_id_selectors.source"
ERROR_GEN = "error_gen"
HELPERS = (ADD_CONFIG_LINE, GET_ID_SELECTORS, ERROR_GEN)
EXECUTABLES = (ERROR_GEN,)
CONFIG_KEYS = {"ADD_CONFIG_LINE_SOURCE": ADD_CONFIG_LINE,  # the glidein_config key that names each helper
               "GET_ID_SELECTORS_SOURCE": GET_ID_SELECTORS,
               "ERROR_GEN_PATH": ERROR_GEN}


def helper_data(name):
    """The bytes of helper name, from the installed package or the zipapp."""
    try:
        data = pkgutil.get_data(PACKAGE, "helpers/" + name)
    except OSError as error:
        data, why = None, str(error)
    else:
        why = "its loader cannot read package data"
    if data is None:
        raise RuntimeError("the helper file {} is missing from package {} ({}): the installation or zipapp was "
                           "built without the package data in glidein/helpers/; rebuild it with them"
                           .format(name, PACKAGE, why))
    return data


def helpers_dir(destination):
    """Copy the helpers into the directory destination (made if missing; existing copies are replaced).

    Returns {file name: absolute path}; error_gen is made executable (0755), the sourced files are 0644.
    """
    destination = os.path.abspath(str(destination))
    os.makedirs(destination, exist_ok=True)
    paths = {}
    for name in HELPERS:
        path = os.path.join(destination, name)
        temporary = path + ".tmp"
        with open(temporary, "wb") as stream:
            stream.write(helper_data(name))
        os.chmod(temporary, 0o755 if name in EXECUTABLES else 0o644)
        os.replace(temporary, path)
        paths[name] = path
    return paths


def config_entries(paths):
    """{glidein_config key: path} for the paths helpers_dir returned (ADD_CONFIG_LINE_SOURCE, ...)."""
    return {key: paths[name] for key, name in CONFIG_KEYS.items()}
