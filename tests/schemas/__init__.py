"""Tests of the contract `schemas/`: codec, evolution, the generated contract, identity, a Confluent consumer."""
