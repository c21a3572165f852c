"""Consumers that write recordings (PyAV) and transcripts, and finalize meetings (a later wave)."""
