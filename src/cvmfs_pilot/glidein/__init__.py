"""The pilot runtime (node tier): verified downloads, glidein_config and GlideinWMS-style scripts, payload, lifetime."""
