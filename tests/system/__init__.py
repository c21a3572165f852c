"""Across the stages: the whole pipeline through the real broker (files out, kill -9, replay, media time, chat, cameras) and the stages' pure cores together."""
