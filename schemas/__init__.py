"""The Avro contract between rtmsflow stages (docs/CONTRACT.md); it imports nothing of the runtime.

`topics` (every topic), `catalog` (the .avsc files), `codec` (values <-> bytes, with or without a
registry), `records` (generated TypedDicts), `evolution` (compatibility), `markers`, `identity`, `limits`,
`deployment` (the defaults the contract states)."""
