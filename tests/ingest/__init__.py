"""Tests of `ingest/`: the webhook, the RTMS client and SDK backends, the producer, the worker."""
