"""Tests of `sinks/`: writers, muxing, layout, the sinks through the broker, replay, retention, tail."""
