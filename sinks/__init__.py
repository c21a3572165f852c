"""The sinks: ordered topics into recordings (WAV, MP4 via PyAV) and transcripts, on disk or in a bucket.

Also replay, prune, forget and tail; how files are finalized and committed: docs/DESIGN.md, "Sinks"."""
