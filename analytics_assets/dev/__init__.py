"""Dev tooling, not the code location: the embedded PostgreSQL stack, the source schema and its
traffic generator, the Kafka-protocol dev broker and the demo. Nothing under `defs/` imports it;
the CLI and the tests do."""
