"""Moderation: exclude, reinstate, void, unvoid and erase, as durable, idempotent, audited state.

``schemas.moderation`` is the action (the contract); ``rules`` decides what an action changes (pure);
``store`` keeps it in PostgreSQL; ``publish`` sends it to Kafka after; ``service`` is the one way the CLI
and the admin API submit actions. docs/adr/0013-moderation.md says how the recompute paths honour it.
"""
