"""The lorag server: OpenAI-compatible RAG chat with per-domain LoRA adapters, hot-swapped.

`serving.app.create_app(settings, retrieval_settings, model_path)` builds the FastAPI app;
`serving.engine` holds the generation engines (vLLM, transformers + PEFT). Layout:
`routers/` (HTTP routes) → `chat` (routing, retrieval, rendering, generation) and `control`
(adapters, domains, jobs, replica sync) → `adapters` (versioned registry), `state` (the shared
store), `search` (the Retriever), `documents`, `jobs`, `metrics`, `auth`, `limits`, `errors`.
"""
