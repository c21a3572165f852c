"""Tests of the runtime package `rtmsflow/`: broker, settings and CLI, the service shell, the stack commands, the view."""
