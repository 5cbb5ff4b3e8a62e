"""What training and serving must agree on, with no dependency on either (pydantic only).

- `contracts.manifest`: the adapter manifest (`lorag-adapter.json`): the base model's
  fingerprint and the prompt format an adapter was trained with, checked before serving;
- `contracts.conversation`: when a conversation can train an adapter, the rule training's
  loader enforces and the feedback export applies before it writes a record.

The prompt format itself is `retrieval.prompt`: it renders retrieved passages.
"""
