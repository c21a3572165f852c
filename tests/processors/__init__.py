"""Tests of `processors/`: reorder, gaps, utterances, lanes, restart and the loop through the broker."""
