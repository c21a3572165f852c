"""The deployment defaults the contract describes: one partition count for every topic, and how long
data topics keep records. The runtime's settings default to them; docs/CONTRACT.md states them."""

DEFAULT_PARTITIONS = 24
DEFAULT_RETENTION_DAYS = 30
