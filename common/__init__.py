"""The wire contract shared by the edge and the cloud, and the conversion profiles.

Nothing in this package does I/O: both halves import it, and so do the tests.
"""
