"""The node layer: probe a worker node, decide how to provide /cvmfs there, and (next) set it up for jobs."""
