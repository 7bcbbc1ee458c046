"""A small Hugging Face Llama on libperformer's attention against the same model on PyTorch's SDPA.

    python benchmarks/hf_llama.py [--sizes 512,2048] [--threads 1,2] [--rounds 5] [--executor torch,own]

Llama from a config (hidden 256, 4 layers, 8 heads, 2 key/value heads: head dim 32, GQA), random weights,
float32, batch 1. For each thread count (torch.set_num_threads; PyTorch's other settings left at their
defaults, so its OpenMP workers spin between ops as they do in any PyTorch program) and each N: forward
(no_grad) and forward+backward of the whole model, attn_implementation="performer" vs "sdpa", timed
alternately in this one process (sdpa, performer, sdpa, ...) so a noisy machine hits both alike; medians.
Then greedy generate() tokens/s at a 32-token prompt (64 new tokens, dynamic cache; medians of 10
alternated runs).

The "bound" column is what no attention implementation can beat: SDPA's time over the time of the same
model whose attention costs nothing (it returns its queries as the output, a view; the masks are
performer's, which allocate nothing), timed in the same alternation. A goal above that bound would need
attention faster than free.

--executor: how performer.torch runs the library's parallel work --
  torch  on PyTorch's OpenMP pool (the default of performer.torch; thread count follows torch), or
  own    on the library's own worker threads, with performer.set_num_threads(t) (the behaviour before).
Ratios > 1 mean performer is faster than SDPA.

--compile times the three models under torch.compile (compiled during the warm-up calls; the
--layer and generate rows stay eager).

--layer adds, per row, one layer's attention call timed alone in the same alternation (inputs captured
from the performer model at that N: q B x H x N x D read in place from the projection's B x N x H x D
layout, k/v B x Hk x L x D, GQA): transformers' sdpa_attention_forward, performer's attention_forward
(the whole glue), and the bare kernels (performer's C extension on preallocated tensors, no autograd);
glue = attention_forward - kernels ("glue before": the same for the glue before 2026-12-05 15:00,
softmax_attention and a transposed copy of its output). From those, f = 1 - 1/bound (attention's share
of SDPA's model time) and s = SDPA's attention time over ours give the whole-model speed-up this
attention can reach, 1 / (1 - f + f / s), printed beside the measured one: a "layer |" line after each
model row, once from wall times and once from the process's CPU times (on a loaded host, CPU time is
what the process computed; at 2 threads it also counts OpenMP workers spinning).
Columns: executor, threads, N, pass, clock, sdpa attention ms, performer attention ms, kernels ms,
glue ms, glue before ms, s, f, reachable, measured.
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
from performer import _performer as ext
from performer.torch import _threads
from performer.torch import transformers as glue

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


def capture_layer_inputs(model, ids):
    """(module, q, k, v, mask, scaling) of the first attention call of the performer model on ids, as
    the model hands them over (with grad: requires_grad leaves of the same layout)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    captured = []

    def capture(module, query, key, value, attention_mask, **kwargs):
        captured.append((module, query.detach(), key.detach(), value.detach(), attention_mask, kwargs["scaling"]))
        return glue.attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("capture", capture)
    AttentionMaskInterface.register("capture", glue.attention_mask)
    layer = model.model.layers[0].self_attn
    layer.config._attn_implementation = "capture"
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    finally:
        layer.config._attn_implementation = "performer"
    return captured[0]


def layer_calls(inputs):
    """The three ways of computing one layer's attention, each f(grad) -> None."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module, q, k, v, mask, scaling = inputs

    def leaves(grad):
        return [t.detach().requires_grad_(grad) for t in (q, k, v)]

    def run(attention, grad):
        qq, kk, vv = leaves(grad)
        if not grad:
            with torch.no_grad():
                attention(qq, kk, vv)
            return
        out = attention(qq, kk, vv)
        out.backward(torch.ones_like(out))

    def sdpa(grad):
        run(lambda a, b, c: sdpa_attention_forward(module, a, b, c, None, scaling=scaling, is_causal=True)[0], grad)

    def ours(grad):
        run(lambda a, b, c: glue.attention_forward(module, a, b, c, mask, scaling=scaling)[0], grad)

    def before(grad):  # the glue before 2026-12-05 15:00: softmax_attention, then a transposed copy
        run(lambda a, b, c: pt.softmax_attention(a, b, c, causal=True, scale=scaling).transpose(1, 2).contiguous(),
            grad)

    B, H, N, _ = q.shape
    out, lse = q.new_empty(B, N, H, v.shape[3]).transpose(1, 2), q.new_empty(B, H, N)
    dq, dk, dv, dout = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.ones_like(out)

    def kernels(grad):
        ext.softmax_forward(q, k, v, out, lse if grad else None, True, scaling, None, None)
        if grad:
            ext.softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, True, scaling, None, None)

    return {"sdpa": sdpa, "performer": ours, "kernels": kernels, "before": before}


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
    parser.add_argument("--layer", action="store_true", help="also time one layer's attention call alone")
    parser.add_argument("--compile", action="store_true",
                        help="time the models under torch.compile (default mode; compiled in the warm-up calls)")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    threads = [int(t) for t in options.threads.split(",")]
    executors = options.executor.split(",")
    models = make_models()
    # The timed models; the eager ones stay for --layer's inputs and generate().
    runs = {name: torch.compile(model) for name, model in models.items()} if options.compile else models
    print("torch %s (default thread settings%s); performer %s (%s); %d CPUs, load average %.1f" % (
        torch.__version__, ", models under torch.compile" if options.compile else "", performer.__version__,
        performer.kernel_isa(), os.cpu_count(), os.getloadavg()[0]))
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
                    medians = alternate(runs, fn, (ids,), options.rounds)
                    (sdpa, sdpa_cpu), (ours, our_cpu) = medians["sdpa"], medians["performer"]
                    free = medians["attention-free"][0]
                    print("| %s | %d | %d | %s | %.1f | %.1f | %.2fx | %.2fx | %.0f | %.0f |" % (
                        kind, t, n, label, sdpa * 1e3, ours * 1e3, sdpa / ours, sdpa / free, sdpa_cpu * 1e3,
                        our_cpu * 1e3), flush=True)
                    if options.layer:
                        calls = layer_calls(capture_layer_inputs(models["performer"], ids))
                        grad = fn is forward_backward
                        layer = alternate(calls, lambda call: call(grad), (), 3 * options.rounds)
                        wall = [layer[x][0] for x in ("sdpa", "performer", "kernels", "before")]
                        cpu = [layer[x][1] for x in ("sdpa", "performer", "kernels", "before")]
                        # Wall and CPU seconds: on a loaded host the process's CPU time is what it computed.
                        for clock, (attn, our_attn, bare, old), model_times in (
                                ("wall", wall, (sdpa, ours, free)),
                                ("CPU", cpu, (sdpa_cpu, our_cpu, medians["attention-free"][1]))):
                            f, speed = 1 - model_times[2] / model_times[0], attn / our_attn
                            print("layer | %s | %d | %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2fx | %.2f"
                                  " | %.2fx | %.2fx |" % (kind, t, n, label, clock, attn * 1e3, our_attn * 1e3,
                                                        bare * 1e3, (our_attn - bare) * 1e3, (old - bare) * 1e3,
                                                        speed, f, 1 / (1 - f + f / speed),
                                                        model_times[0] / model_times[1]), flush=True)
            if options.generate:
                prompt = torch.randint(3, 1024, (1, 32), generator=torch.Generator().manual_seed(7))
                decoders = {name: models[name] for name in ("sdpa", "performer")}
                rates = {name: [] for name in decoders}
                tokens = {}
                for round_ in range(10):  # alternated, neither always first: a step is ~1 ms, noise is large
                    for name in (("sdpa", "performer") if round_ % 2 == 0 else ("performer", "sdpa")):
                        tokens[name], rate = generate_rate(decoders[name], prompt, options.generate)
                        rates[name].append(rate)
                same = torch.equal(tokens["sdpa"], tokens["performer"])
                sdpa_rate, our_rate = statistics.median(rates["sdpa"]), statistics.median(rates["performer"])
                print("| %s | %d | prompt 32 | generate tok/s | %.0f | %.0f | %.2fx%s | | | |" % (
                    kind, t, sdpa_rate, our_rate, our_rate / sdpa_rate, "" if same else " (tokens differ!)"),
                    flush=True)


if __name__ == "__main__":
    main()
