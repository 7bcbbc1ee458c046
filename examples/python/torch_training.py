"""Training a tiny PyTorch model whose attention is libperformer's (performer.torch).

The model learns a copy task: each sequence's second half repeats its first half, so the
next token is predictable only by attending to the right earlier position. The causal
self-attention (4 query heads sharing 2 key/value heads) is performer.torch.SoftmaxAttention;
its forward and backward run in libperformer.

Run after `pip install ./bindings/python` (and `pip install torch`):
    python examples/python/torch_training.py
Without PyTorch it says so and exits 0.
"""
import sys

try:
    import torch
except ImportError:
    print("PyTorch is not installed: skipping the performer.torch training example "
          "(pip install torch to run it)")
    sys.exit(0)

import torch.nn.functional as F

import performer
from performer.torch import SoftmaxAttention

VOCAB, WIDTH, HEADS, KV_HEADS, SEQ, BATCH, STEPS = 8, 32, 4, 2, 8, 32, 100


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head_dim = WIDTH // HEADS
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.position = torch.nn.Parameter(0.1 * torch.randn(SEQ, WIDTH))
        self.q = torch.nn.Linear(WIDTH, WIDTH)
        self.kv = torch.nn.Linear(WIDTH, 2 * KV_HEADS * self.head_dim)
        self.attention = SoftmaxAttention(causal=True)
        self.out = torch.nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):
        B, N = tokens.shape
        x = self.embed(tokens) + self.position[:N]
        # B x N x heads x head_dim, viewed as B x heads x N x head_dim: performer reads the
        # transposed views in place.
        q = self.q(x).view(B, N, HEADS, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(B, N, 2, KV_HEADS, self.head_dim).permute(2, 0, 3, 1, 4)
        y = self.attention(q, k, v)                  # B x HEADS x N x head_dim
        return self.out(x + y.transpose(1, 2).reshape(B, N, WIDTH))


def batch(generator):
    first = torch.randint(1, VOCAB, (BATCH, SEQ // 2), generator=generator)
    return torch.cat([first, first], dim=1)


def main():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = TinyModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    print("libperformer %s, PyTorch %s; model: %s" % (performer.__version__, torch.__version__,
                                                      model.attention))
    losses = []
    for step in range(STEPS):
        tokens = batch(generator)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == STEPS - 1:
            print("step %3d  loss %.4f" % (step, losses[-1]))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if not last < 0.75 * first:
        print("loss did not decrease enough: %.4f -> %.4f" % (first, last))
        return 1
    print("loss decreased: %.4f -> %.4f (mean of the first and last 5 steps)" % (first, last))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
