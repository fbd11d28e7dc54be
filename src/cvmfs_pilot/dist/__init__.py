"""Client distributions: build the cvmfs2 and python engines per source and platform into a staging area.

Server tier. See docs/staging.md for the staging area and the formats the node layer reads.
"""
