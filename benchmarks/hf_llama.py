"""A small Hugging Face Llama on libperformer's attention against the same model on PyTorch's SDPA.

    python benchmarks/hf_llama.py [--sizes 512,2048] [--threads 1,2] [--rounds 5] [--executor torch,own]

Llama from a config (hidden 256, 4 layers, 8 heads, 2 key/value heads: head dim 32, GQA), random weights,
float32, batch 1. For each thread count (torch.set_num_threads; PyTorch's other settings left at their
defaults, so its OpenMP workers spin between ops as they do in any PyTorch program) and each N: forward
(no_grad) and forward+backward of the whole model, attn_implementation="performer" vs "sdpa", timed
alternately in this one process (sdpa, performer, sdpa, ...) so a noisy machine hits both alike; medians.
Then greedy generate() tokens/s at a 32-token prompt (64 new tokens, dynamic cache).

The "bound" column is what no attention implementation can beat: SDPA's time over the time of the same
model whose attention costs nothing (it returns its queries as the output, a view; the masks are
performer's, which allocate nothing), timed in the same alternation. A goal above that bound would need
attention faster than free.

--executor: how performer.torch runs the library's parallel work --
  torch  on PyTorch's OpenMP pool (the default of performer.torch; thread count follows torch), or
  own    on the library's own worker threads, with performer.set_num_threads(t) (the behaviour before).
Ratios > 1 mean performer is faster than SDPA.
"""
import argparse
import copy
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import performer
import performer.torch as pt
from performer.torch import _threads

pt.register_transformers_attention("performer")


def free_attention(module, query, key, value, attention_mask, **kwargs):
    """An attention that costs nothing: the output is the queries (B x N x H x D view), so the model runs
    everything but attention. For the bound column only."""
    return query.transpose(1, 2), None


def register_free_attention():
    from transformers import AttentionInterface, AttentionMaskInterface
    from performer.torch.transformers import attention_mask

    AttentionInterface.register("attention-free", free_attention)
    AttentionMaskInterface.register("attention-free", attention_mask)


def make_models():
    """The three models, each from its own copy of the config: from_config records the attention
    implementation in the config object it is given, so models sharing one config would all run the
    implementation named last."""
    config = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096)
    register_free_attention()
    torch.manual_seed(0)
    models = {}
    for name in ("sdpa", "performer", "attention-free"):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=name).float().eval()
        if models:
            model.load_state_dict(models["sdpa"].state_dict())
        models[name] = model
    for name, model in models.items():
        running = {layer.self_attn.config._attn_implementation for layer in model.model.layers}
        assert running == {name}, "model %s runs attention %s" % (name, running)
    return models


def forward(model, ids):
    with torch.no_grad():
        model(ids)


def forward_backward(model, ids):
    model.zero_grad(set_to_none=True)
    model(ids, labels=ids).loss.backward()


def timed(fn, *args):
    """(wall seconds, CPU seconds of the whole process): CPU time counts spinning threads too, and
    stays meaningful when a loaded machine stretches the wall time."""
    start, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - start, time.process_time() - cpu


def alternate(models, fn, args, rounds):
    """Median (wall, CPU) seconds per model, runs interleaved; one warm-up each."""
    samples = {name: [] for name in models}
    for name, model in models.items():
        fn(model, *args)
    order = list(models.items())
    for _ in range(rounds):
        for name, model in order:
            samples[name].append(timed(fn, model, *args))
        order.reverse()  # neither always runs first
    return {name: tuple(statistics.median(x[i] for x in s) for i in range(2)) for name, s in samples.items()}


def generate_rate(model, prompt, new_tokens):
    with torch.no_grad():
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0)
        seconds = time.perf_counter() - start
    return out, new_tokens / seconds


def set_executor(kind, threads):
    if kind == "torch":
        _threads.use_torch_threads(True)
        performer.set_num_threads(0)  # follow torch.set_num_threads
    else:
        _threads.use_torch_threads(False)
        performer.set_num_threads(threads)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--executor", default="torch,own")
    parser.add_argument("--generate", type=int, default=64, help="new tokens for generate(); 0 skips it")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    threads = [int(t) for t in options.threads.split(",")]
    executors = options.executor.split(",")
    models = make_models()
    print("torch %s (default thread settings); performer %s (%s); %d CPUs, load average %.1f" % (
        torch.__version__, performer.__version__, performer.kernel_isa(), os.cpu_count(), os.getloadavg()[0]))
    print("| executor | threads | N | pass | sdpa ms | performer ms | speed vs sdpa | bound | sdpa CPU ms |"
          " performer CPU ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in threads:
        torch.set_num_threads(t)
        for kind in executors:
            set_executor(kind, t)
            for n in sizes:
                ids = torch.randint(0, 1024, (1, n), generator=torch.Generator().manual_seed(n))
                for label, fn in (("forward", forward), ("fwd+bwd", forward_backward)):
                    medians = alternate(models, fn, (ids,), options.rounds)
                    (sdpa, sdpa_cpu), (ours, our_cpu) = medians["sdpa"], medians["performer"]
                    free = medians["attention-free"][0]
                    print("| %s | %d | %d | %s | %.1f | %.1f | %.2fx | %.2fx | %.0f | %.0f |" % (
                        kind, t, n, label, sdpa * 1e3, ours * 1e3, sdpa / ours, sdpa / free, sdpa_cpu * 1e3,
                        our_cpu * 1e3), flush=True)
            if options.generate:
                prompt = torch.randint(3, 1024, (1, 32), generator=torch.Generator().manual_seed(7))
                decoders = {name: models[name] for name in ("sdpa", "performer")}
                rates = {name: [] for name in decoders}
                tokens = {}
                for _ in range(3):
                    for name, model in decoders.items():
                        tokens[name], rate = generate_rate(model, prompt, options.generate)
                        rates[name].append(rate)
                same = torch.equal(tokens["sdpa"], tokens["performer"])
                sdpa_rate, our_rate = statistics.median(rates["sdpa"]), statistics.median(rates["performer"])
                print("| %s | %d | prompt 32 | generate tok/s | %.0f | %.0f | %.2fx%s | | | |" % (
                    kind, t, sdpa_rate, our_rate, our_rate / sdpa_rate, "" if same else " (tokens differ!)"),
                    flush=True)


if __name__ == "__main__":
    main()
