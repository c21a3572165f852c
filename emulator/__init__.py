"""A faithful Zoom RTMS server and webhook sender with synthetic meetings, for offline runs and tests."""
