"""rtmsflow's shared runtime: settings, structured logging, the Kafka client factory, the local
Kafka broker and the CLI. Stages (ingest, processors, sinks) and the emulator import this package and
`schemas`, never each other."""

__version__ = "0.1.0"
