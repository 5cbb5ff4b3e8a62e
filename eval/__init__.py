"""Measure what adaptation and retrieval each buy.

- `eval.dataset`: JSONL eval sets, validated line by line.
- `eval.metrics`: pure metric functions (retrieval, answers, groundedness, citations).
- `eval.retrieval_eval`: recall/MRR/nDCG/answer-in-context per search mode.
- `eval.answers`: base / base+rag / adapter / adapter+rag against a running server
  (`run_answers` runs one evaluation); `eval.answers_report` turns its rows into a report.
- `eval.perplexity`: sliding-window perplexity, base vs adapters.
- `eval.load`: concurrent streaming load test, optionally replacing adapters; one adapter
  replaced under load (`swap_under_load`, the demo's stage 6).
- `eval.report`: run folders with report.md, results.json and PNG plots.
"""
