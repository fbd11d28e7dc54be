"""FUSE without libfuse: the kernel protocol (:mod:`.protocol`), mounting (:mod:`.mount`), the request loop
(:mod:`.server`), the read-only CernVM-FS file system (:mod:`.filesystem`) and ``cvmfs-pilot fs mount``
(:mod:`.cli`)."""
