"""Faust agents: reorder, dedupe, gaps, transcript utterances, meetings index (a later wave)."""
