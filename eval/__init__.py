"""Measure what adaptation and retrieval each buy.

- `eval.dataset`: JSONL eval sets, validated line by line.
- `eval.metrics`: pure metric functions (retrieval, answers, groundedness, citations).
- `eval.retrieval_eval`: recall/MRR/nDCG/answer-in-context per search mode.
- `eval.answers`: base / base+rag / adapter / adapter+rag against a running server.
- `eval.perplexity`: sliding-window perplexity, base vs adapters.
- `eval.load`: concurrent streaming load test, optionally replacing adapters.
- `eval.report`: run folders with report.md, results.json and PNG plots.
"""
