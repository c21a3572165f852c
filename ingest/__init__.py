"""Webhook endpoint, RTMS session workers and clients: Zoom in, raw topics out."""
