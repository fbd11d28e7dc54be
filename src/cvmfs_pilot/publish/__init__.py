"""The publisher (server tier, Python 3.10+): keys, signing and writing standard CernVM-FS repositories."""
