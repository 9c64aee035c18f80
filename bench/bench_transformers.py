"""transformers models with aotriton, in one run: a small random Mixtral (hidden
1024, 4 layers, 16 query / 4 kv heads, 8 experts top-2, intermediate 1024, bf16)
timed with attn_implementation / experts_implementation

    aotriton       "aotriton" / "aotriton"
    sdpa+eager     "sdpa" / "eager"      (transformers' per-expert loop)
    sdpa+grouped   "sdpa" / "grouped_mm" (torch._grouped_mm)

    python bench/bench_transformers.py [--prefix install] [--quick] [--json bench/results/transformers_sm90.json]

Rows:
  prefill   batch 8 x 2048 tokens, one forward (no cache), ms
  decode    one decode step (1 new token per sequence) against a filled cache of
            `context` tokens (1024, 8192) at batch 1, 8, 64, ms (eager; the cache is
            a DynamicCache built by a prefill, cropped back by one token after each step)
  train     forward + backward of a batch 8 x 512 language-model loss, ms
Results go to --json (rows, GPU, versions, commit) and, when $OUT is set, to
$OUT/transformers_sm90.json. Needs transformers (5.17 was used) and a GPU.
"""
import argparse
import copy
import json
import os
import sys
from pathlib import Path

from bench_common import commit_id

REPO = Path(__file__).resolve().parent.parent
IMPLS = {"aotriton": ("aotriton", "aotriton"), "sdpa+eager": ("sdpa", "eager"),
         "sdpa+grouped": ("sdpa", "grouped_mm")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--json", default=str(REPO / "bench/results/transformers_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import transformers
    import triton

    import aotriton
    import aotriton.integrations.transformers  # noqa: F401  (registers "aotriton")

    dev = "cuda"
    warm, rep = (5, 20) if args.quick else (10, 60)

    def t_ms(fn):
        fn()
        return triton.testing.do_bench(fn, warmup=warm, rep=rep, return_mode="median")

    cfg = transformers.MixtralConfig(vocab_size=32000, hidden_size=1024, intermediate_size=1024, num_hidden_layers=4,
                                     num_attention_heads=16, num_key_value_heads=4, num_local_experts=8,
                                     num_experts_per_tok=2, max_position_embeddings=16384, sliding_window=None)
    torch.manual_seed(0)
    base = transformers.MixtralForCausalLM(cfg).to(dev, torch.bfloat16).eval()
    models = {}
    for name, (attn, experts) in IMPLS.items():
        m = copy.deepcopy(base)
        m.set_attn_implementation(attn)
        m.set_experts_implementation(experts)
        models[name] = m
    del base
    rows = []

    def record(kind, name, ms, **extra):
        rows.append({"kind": kind, "impl": name, "ms": round(ms, 4), **extra})
        print(f"| {kind} | {name} | {extra} | {ms:.3f} |", flush=True)

    print("| row | impl | shape | ms |\n|---|---|---|---|")
    gen = torch.Generator(device=dev).manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (8, 2048), device=dev, generator=gen)
    for name, m in models.items():
        with torch.no_grad():
            record("prefill", name, t_ms(lambda: m(input_ids=ids, use_cache=False)), batch=8, seqlen=2048)

    for context in (1024, 8192):
        for batch in (1, 8, 64):
            prompt = torch.randint(0, cfg.vocab_size, (batch, context), device=dev, generator=gen)
            step = torch.randint(0, cfg.vocab_size, (batch, 1), device=dev, generator=gen)
            for name, m in models.items():
                with torch.no_grad():
                    cache = transformers.DynamicCache(config=cfg)
                    for c0 in range(0, context, 1024):  # chunked prefill keeps the sdpa/eager paths in memory
                        m(input_ids=prompt[:, c0:c0 + 1024], past_key_values=cache, use_cache=True)

                    def decode():
                        m(input_ids=step, past_key_values=cache, use_cache=True)
                        cache.crop(-1)  # drop the step again
                    record("decode", name, t_ms(decode), batch=batch, context=context)
                    del cache
            del prompt

    tids = torch.randint(0, cfg.vocab_size, (8, 512), device=dev, generator=gen)
    for name, m in models.items():
        m.train()

        def step():
            m.zero_grad(set_to_none=True)
            m(input_ids=tids, labels=tids).loss.backward()
        record("train", name, t_ms(step), batch=8, seqlen=512)
        m.eval()

    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "transformers": transformers.__version__, "aotriton": aotriton.__version__, "commit": commit_id(),
            "model": {k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                     "num_attention_heads", "num_key_value_heads",
                                                     "num_local_experts", "num_experts_per_tok")},
            "command": "python bench/bench_transformers.py" + (" --quick" if args.quick else "")}
    text = json.dumps({**meta, "rows": rows}, indent=1, sort_keys=True) + "\n"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(text)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "transformers_sm90.json").write_text(text)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
