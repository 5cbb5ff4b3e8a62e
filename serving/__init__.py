"""The lorag server: OpenAI-compatible RAG chat with per-domain LoRA adapters, hot-swapped.

`serving.app.create_app(settings, retrieval_settings, model_path)` builds the FastAPI app;
`serving.engine` holds the generation engines (vLLM, transformers + PEFT). Layout:
`routers/` (HTTP routes, bodies typed in `protocol`) → `chat` (routing, retrieval, rendering,
generation) and `control` (adapters, domains, jobs, replica sync) → `adapters` (versioned
registry), `state` (the shared store), `search` (the Retriever), `feedback/` (records, the
store, the export), `documents`, `jobs`, `metrics`, `auth`, `limits`, `errors`. `process`
runs a server as a subprocess (the demo, tests and benchmarks).
"""
