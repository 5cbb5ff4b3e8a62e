"""The quickstart: the whole product, offline, on a real model, stage by stage (`lorag demo`).

`run_demo(demo_file)` reads a demo file (`examples/demo.yaml`): a `demo:` section (the base
model, the example domains, the budget of each stage) next to the usual lorag config sections
(`retrieval:`, `training:`, `serving:`, `eval:`). Then, with progress at every stage, it

1. resolves the base model (Gemma 3 270M is converted from its GGUF once, then cached);
2. indexes each domain's `docs/` into embedded Qdrant under the demo's data folder;
3. trains one LoRA adapter per domain on retrieval-aware (RAFT) samples built from its
   `qa/train.jsonl` and its index;
4. releases the Qdrant folder and starts `lorag serve` (vLLM engine) as a subprocess on
   127.0.0.1, the domains (adapter + index + system prompt) declared in its config, and
   waits for `/ready`;
5. asks a few held-out questions with the official `openai` client and prints the answers
   with their sources;
6. replaces one domain's adapter (a new version under the same name) while requests run,
   and counts failures and the versions that served;
7. runs the answers eval (`eval.answers`) on held-out questions and writes its reports;
8. stops the server and checks that none of its processes is left.

Everything the demo writes lives under `demo.data_dir` (recreated on each run); the converted
base model is cached in `demo.model_cache_dir`, outside it, where `lorag train` and
`lorag serve` find it by default.

Modules: `settings` (the `demo:` section), `plan` (domain folders, the effective config),
`stages` (each stage: calls into the libraries, and what it prints), `summary` (tables,
verdicts, `demo-summary.md`), `run` (the stages in order, the server always stopped).
"""
