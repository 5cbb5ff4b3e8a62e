"""Feedback on served answers, and its export as training data for an adapter's next version.

The store (`store`; its lines: `records`)
-----------------------------------------
Every completed chat exchange is recorded (the conversation as the client sent it, not the
rendered prompt; the domain's system prompt; the answer; what served it: domain, adapter and
version, index version, the retrieved sources' doc ids). `POST /v1/feedback` then adds a
rating and/or a correction to a response id. Both are lines of append-only JSONL files:

    <serving.data_dir>/feedback/<replica>.jsonl      (replica: serving.feedback.replica,
                                                       default the host name)

- Each line is one JSON object, `{"type": "exchange", ...}` or `{"type": "feedback", ...}`,
  written with one `write` under a file lock (`<file>.lock`), so processes sharing a file
  never interleave; a torn last line (a crash mid-write) is skipped by readers and sealed
  off with a newline by the next writer. Feedback lines are fsynced; exchange lines are
  flushed to the OS (a machine crash may lose the last few exchanges, never feedback).
- Feedback on a response id that already has some replaces it: the last event wins
  (by time), in the store and in the export.
- Retention: the owner of a file rewrites it (atomically: temp file + rename) when it holds
  more than `max_exchanges` exchanges, dropping the oldest *unrated* first, and drops
  exchanges and feedback older than `retention_days`.
- Replicas: each replica appends only to its own file. When `data_dir` is a shared volume,
  feedback can reach any replica (an unknown id makes it read the other replicas' new
  lines) and an export reads every file. Readers take no lock: they read whole lines, and a
  rewrite replaces the file atomically, so exporting while servers run is safe.

The export (`export`)
---------------------
`export_records` turns the feedback into training records: positively rated exchanges
(`rating >= min_rating`) keep their answer, corrected ones get the correction as the answer,
anything else (negative or neutral without a correction) is left out. Formats:

- `chat`: `{"messages": [system?, ...turns, {"role": "assistant", ...}], "metadata": {...}}`,
  for `lorag train --data` (training's loader ignores the extra `metadata` key). The system
  message is the domain's system prompt as served; retrieved context is not included.
- `qa`: `{"question", "answer", "metadata"}` for single-turn exchanges, for
  `lorag train --qa FILE --domain D`, which re-retrieves context and renders it through the
  shared prompt module, as the server does. Use it for domains with an index.
"""
