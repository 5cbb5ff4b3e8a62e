"""Question embedding: ONNX Runtime settings side by side, interleaved, on real questions.

    .venv/bin/python benchmarks/query_encoder.py [--rounds 5] [--busy 1]

`--busy N` keeps N other processes computing meanwhile, as a served LLM would.

Every configuration encodes the same questions one at a time (the served shape: one chat,
one question), and the configurations take turns question by question, so that a change in
the machine's load hits all of them alike. The questions are the example domains'
(held-out and training, 238). Configurations: lorag's encoder (`retrieval/query_encoder.py`,
the exported graph with ONNX Runtime's own optimisations) on 1 and 2 threads (and on 2
threads whose idle workers sleep instead of spinning), its 8-bit-weight version
(`query_backend: onnx-int8`) on 2 sleeping threads and on 1, and the same graph after ONNX
Runtime's transformer fusions (attention, LayerNorm, GELU:
`onnxruntime.transformers.optimizer`, model type bert) on 1 and 2 threads; sentence-
transformers on torch for reference. Each row: p50 / p95 per question and the largest
difference from sentence-transformers' vector (cosine distance).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from retrieval.embedding import Embedder, _resolve_location, default_onnx_cache
from retrieval.query_encoder import OnnxQueryEncoder, _cpu_has_vnni, _quantized, cache_key


def questions() -> list[str]:
    out: list[str] = []
    for domain in ("acme-router", "northwind-policies"):
        for name in ("heldout.jsonl", "train.jsonl"):
            path = ROOT / "examples" / domain / "qa" / name
            out += [json.loads(line)["question"] for line in path.read_text().splitlines() if line]
    return list(dict.fromkeys(out))


def session(path: Path, threads: int, spinning: bool = True):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if not spinning:  # idle worker threads sleep instead of spinning for the next task
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over the questions")
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="processes that keep a core busy meanwhile (a stand-in for the LLM's load)",
    )
    args = parser.parse_args()
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for process in busy:
        process.start()
    try:
        _run(args.rounds, args.busy)
    finally:
        for process in busy:
            process.terminate()


def _spin() -> None:
    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    while True:
        a = (a @ a) / 256.0


def _run(rounds: int, busy: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model
    from rich.console import Console
    from rich.table import Table

    embedder = Embedder("all-MiniLM-L6-v2", query_backend="onnx")
    model = embedder.load()
    model_dir = Path(_resolve_location(embedder.name))
    lorag = OnnxQueryEncoder.load(model, model_dir, default_onnx_cache())
    exported = default_onnx_cache() / f"{model_dir.name}-{cache_key(model_dir)}.onnx"
    texts = questions()
    reference = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    with tempfile.TemporaryDirectory() as tmp:
        fused_path = Path(tmp) / "fused.onnx"
        config = model[0].auto_model.config
        optimize_model(
            str(exported),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
        ).save_model_to_file(str(fused_path))
        int8 = OnnxQueryEncoder.load(model, model_dir, default_onnx_cache(), int8=True)
        int8_path = _quantized(exported, _cpu_has_vnni())  # the file behind `int8`
        encoders = {
            "lorag encoder, 2 threads, no spinning": lorag,
            "8-bit weights (onnx-int8), 2 threads, no spinning": int8,
        }
        for label, path, threads, spinning in (
            ("8-bit weights, 1 thread", int8_path, 1, True),
            ("7-bit weights (CPUs without VNNI), 2 threads", _quantized(exported, False), 2, False),
            ("lorag encoder, 1 thread", exported, 1, True),
            ("lorag encoder, 2 threads, spinning", exported, 2, True),
            ("transformer fusions, 1 thread", fused_path, 1, True),
            ("transformer fusions, 2 threads", fused_path, 2, True),
        ):
            encoders[label] = OnnxQueryEncoder(
                session(path, threads, spinning),
                model.tokenizer,
                int(model.max_seq_length),
                "mean",
                True,
            )
        times: dict[str, list[float]] = {label: [] for label in [*encoders, "torch"]}
        distance = {label: 0.0 for label in encoders}
        for label, encoder in encoders.items():  # warm-up, and the vectors against torch's
            vectors = np.concatenate([encoder.encode([text]) for text in texts])
            distance[label] = float(np.max(1 - np.sum(vectors * reference, axis=1)))
        for _ in range(rounds):
            for text in texts:
                for label, encoder in encoders.items():
                    started = time.perf_counter()
                    encoder.encode([text])
                    times[label].append(time.perf_counter() - started)
                started = time.perf_counter()
                model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
                times["torch"].append(time.perf_counter() - started)

    title = f"one question at a time: {len(texts)} questions x {rounds} rounds"
    table = Table(title=title + (f", {busy} busy processes" if busy else ""))
    for column in ("configuration", "p50 ms", "p95 ms", "max cosine distance to torch"):
        table.add_column(column)
    for label, values in times.items():
        ordered = sorted(values)
        table.add_row(
            label,
            f"{statistics.median(ordered) * 1000:.2f}",
            f"{ordered[int(0.95 * (len(ordered) - 1))] * 1000:.2f}",
            f"{distance[label]:.1e}" if label in distance else "-",
        )
    table.caption = f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs"
    Console().print(table)


if __name__ == "__main__":
    main()
