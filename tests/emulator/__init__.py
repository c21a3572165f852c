"""Tests of `emulator/`: the RTMS server and its session, media, webhooks, Zoom's SDK joining it."""
