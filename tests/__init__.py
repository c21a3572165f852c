"""The test suite: one package per source package, plus `system` (the whole pipeline) and `support`."""
