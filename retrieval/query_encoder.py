"""Query embedding on ONNX Runtime: the same weights, exported here, on two sleeping threads.

Why: a question is one short sequence, where PyTorch's eager per-operator overhead costs
more than the arithmetic; ONNX Runtime runs the same graph about twice as fast. Its session
gets 2 threads whose idle workers sleep instead of spinning (`allow_spinning` off): the
second core is used for the few milliseconds of a question and left to the LLM engine
otherwise; that was the fastest configuration both on an idle 2-core machine and with
another process computing (benchmarks/query_encoder.py, docs/retrieval.md). Documents keep
going through sentence-transformers on PyTorch (batched, where eager overhead does not
matter); the two give the same vectors to 1e-5. With `query_backend: onnx-int8` the
export's weights are then quantised to 8 bits, which cuts a question's time by a third or
more for vectors within cosine 0.98 (docs/retrieval.md: not the default, because the
changed order of near-tied chunks changed the adapters trained on them).

The export is made from the loaded sentence-transformers model, cached on disk under a key
of the model's files and the torch version, written atomically, and only for the shapes
this module knows how to finish: a Hugging Face encoder followed by mean or CLS pooling and
optional normalisation. Anything else stays on PyTorch. (sentence-transformers' own ONNX
backend needs `optimum-onnx`, which pins transformers 4.x.)
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXPORT_VERSION = "1"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class UnsupportedModelError(ValueError):
    """The model's module stack is not one this encoder reproduces exactly."""


def _pipeline(model: Any) -> tuple[Any, str, bool]:
    """(the Hugging Face encoder, pooling mode, normalise) of a sentence-transformers model."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UnsupportedModelError(f"module stack {names}")
    pooling = str(modules[1].get_config_dict().get("pooling_mode", ""))
    if pooling not in ("mean", "cls"):
        raise UnsupportedModelError(f"pooling mode {pooling!r}")
    return modules[0].auto_model, pooling, len(modules) == 3


def cache_key(model_dir: Path) -> str:
    """Changes when the model's files or the exporter change."""
    import torch

    digest = hashlib.sha256(f"{EXPORT_VERSION}:{torch.__version__}".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _export(encoder: Any, tokenizer: Any, input_names: list[str]) -> bytes:
    import torch

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.encoder(**dict(zip(input_names, tensors, strict=True))).last_hidden_state

    sample = tokenizer(["an example question"], return_tensors="pt")
    buffer = io.BytesIO()
    axes = {name: {0: "batch", 1: "tokens"} for name in [*input_names, "hidden"]}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-level branches
        torch.onnx.export(
            _Hidden().eval(),
            tuple(sample[name] for name in input_names),
            buffer,
            input_names=input_names,
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


class _DropAdvice(logging.Filter):
    """Drops the quantiser's advice to pre-process the graph (its symbolic shape inference
    fails on this export and changed neither speed nor vectors when the rest was run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has 8-bit dot-product instructions (AVX-512 VNNI or AVX-VNNI).

    Read from Linux's /proc/cpuinfo; anywhere else the answer is a cautious False.
    """
    try:
        flags = cpuinfo.read_text(errors="replace").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _quantized(path: Path, full_range: bool) -> Path:
    """The export with 8-bit weights (dynamic quantisation), made once beside it.

    ONNX Runtime's own dynamic quantisation: signed 8-bit weights with one scale per output
    channel, activations quantised per call; about 2x faster for one question. `full_range`
    False keeps the weights to 7 bits (`reduce_range`), which CPUs without VNNI need: their
    8-bit kernels add pairs of products in 16 bits and can saturate with full-range
    weights. With VNNI (accumulation in 32 bits) all 8 bits are used: on the Valgrind
    manual's questions full-range weights ranked exactly as the float model, 7-bit ones
    lost one question of 93 at rank 1 (docs/retrieval.md).
    """
    suffix = "int8" if full_range else "int8-7bit"
    target = path.with_name(f"{path.stem}-{suffix}.onnx")
    if target.is_file():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch = path.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        advice = _DropAdvice()
        logging.getLogger().addFilter(advice)  # the quantiser warns on the root logger
        try:
            quantize_dynamic(
                path,
                scratch,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=not full_range,
            )
        finally:
            logging.getLogger().removeFilter(advice)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    log.info("quantised the query encoder to %s", target)
    return target


class OnnxQueryEncoder:
    """Encodes query batches with ONNX Runtime; built by `load`, never half-initialised.

    `one_at_a_time`: run each text as its own batch. The 8-bit model needs it: dynamic
    quantisation scales the activations per call over the whole batch, padding included, so
    a question's vector would otherwise depend on which questions shared its call.
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        max_length: int,
        pooling: str,
        normalise: bool,
        one_at_a_time: bool = False,
    ):
        self._one_at_a_time = one_at_a_time
        self._session = session
        self._tokenizer = tokenizer
        self._max_length = max_length
        self._pooling = pooling
        self._normalise = normalise
        self._inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def load(
        cls, model: Any, model_dir: Path, cache_dir: Path, threads: int = 2, int8: bool = False
    ) -> OnnxQueryEncoder:
        """Export (or reuse the cached export of) `model`; raises when that is not possible.

        `int8`: run the export's matrix products on 8-bit weights (see `_quantized`).
        """
        import onnxruntime

        encoder, pooling, normalise = _pipeline(model)
        tokenizer = model.tokenizer
        probe = tokenizer(["x"], return_tensors="np")
        input_names = [name for name in _INPUTS if name in probe]
        path = cache_dir / f"{model_dir.name}-{cache_key(model_dir)}.onnx"
        if not path.is_file():
            data = _export(encoder, tokenizer, input_names)
            cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)  # readers see no file or the whole file
            log.info("exported the query encoder to %s", path)
        if int8:
            path = _quantized(path, full_range=_cpu_has_vnni())
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        return cls(session, tokenizer, int(model.max_seq_length), pooling, normalise, int8)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors as sentence-transformers would give them, shape (len(texts), dimension)."""
        if self._one_at_a_time and len(texts) > 1:
            return np.concatenate([self._encode_batch([text]) for text in texts])
        return self._encode_batch(texts)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="np"
        )
        feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in self._inputs}
        hidden = self._session.run(None, feeds)[0]
        if self._pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(hidden.dtype)
            vectors = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if self._normalise:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.asarray(vectors, dtype=np.float32)
