"""The Avro contract between rtmsflow stages: schemas (avro/*.avsc), topics and the codec.

`topics` (every topic), `catalog` (the .avsc files), `codec` (values <-> bytes, with or without a
registry), `records` (generated TypedDicts), `evolution` (compatibility), `markers`, `identity`, `limits`,
`deployment` (the defaults the contract states). It imports nothing of the runtime: callers pass values in;
wire formats and schema evolution are in docs/CONTRACT.md."""
