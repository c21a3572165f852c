"""Tests of `rtms_protocol/`: messages, the JSON codec, the client's handshakes."""
