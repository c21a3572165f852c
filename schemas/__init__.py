"""The Avro contract between rtmsflow stages: schemas (avro/*.avsc), topics and the codec."""
