"""The attention functions as torch.nn.Modules (no trainable parameters)."""

import torch

import performer as _performer
from performer import _common
from performer import favor as _favor
from performer import linear as _linear

from .favor import favor_attention
from .linear import linear_attention
from .softmax import scale_arg, softmax_attention

__all__ = ["SoftmaxAttention", "LinearAttention", "FavorAttention"]


class SoftmaxAttention(torch.nn.Module):
    """Exact softmax attention as a module without parameters: ``forward(q, k, v,
    kv_lengths=None, kv_starts=None)`` is :func:`softmax_attention` with this module's ``causal`` and
    ``scale`` (see there for shapes, masking and the causal alignment)."""

    def __init__(self, causal=False, scale=None):
        super().__init__()
        self.causal = bool(causal)
        self.scale = scale_arg(scale)

    def forward(self, q, k, v, kv_lengths=None, kv_starts=None):
        return softmax_attention(q, k, v, causal=self.causal, scale=self.scale, kv_lengths=kv_lengths,
                                 kv_starts=kv_starts)

    def extra_repr(self):
        return "causal=%s, scale=%s" % (self.causal, self.scale)


class LinearAttention(torch.nn.Module):
    """Linear attention ("Transformers are RNNs") as a module without parameters:
    ``forward(q, k, v, kv_lengths=None, kv_starts=None, initial_state=None, return_state=False)``
    is :func:`linear_attention` with this module's ``causal``, ``feature_map``, ``eps`` and
    ``normalize``."""

    def __init__(self, causal=False, feature_map="elu+1", eps=1e-6, normalize=True):
        super().__init__()
        _linear._feature_map(feature_map)
        self.causal = bool(causal)
        self.feature_map = feature_map
        self.eps = _common._real("eps", eps)
        self.normalize = bool(normalize)

    def forward(self, q, k, v, kv_lengths=None, kv_starts=None, initial_state=None, return_state=False):
        return linear_attention(q, k, v, causal=self.causal, feature_map=self.feature_map, eps=self.eps,
                                normalize=self.normalize, kv_lengths=kv_lengths, kv_starts=kv_starts,
                                initial_state=initial_state, return_state=return_state)

    def extra_repr(self):
        return "causal=%s, feature_map=%r, eps=%s, normalize=%s" % (self.causal, self.feature_map, self.eps,
                                                                  self.normalize)


class FavorAttention(torch.nn.Module):
    """FAVOR+ attention as a module without trainable parameters.

    W (``num_features`` x ``dim``, m x D) is the registered buffer ``W``: it is in ``state_dict``,
    saved and loaded, moved and cast with the module (float64 at creation; ``module.float()``
    makes it float32). It is drawn from the seeded generator of :class:`performer.FavorProjection`
    (``kind``, ``norms``, ``seed``); :meth:`redraw` replaces it by the generator's next draw (the
    paper's periodic feature redrawing -- call it, e.g., every few hundred training steps; it never
    happens on its own). The generator's settings and the draw number travel in ``state_dict``
    too (the module's extra state), so a loaded module redraws as the saved one would.
    ``copy.deepcopy``, ``pickle`` and ``torch.save`` / ``torch.load`` work.

    ``forward(q, k, v, kv_lengths=None, kv_starts=None, initial_state=None, return_state=False)`` is
    :func:`favor_attention` with this module's W and options.
    """

    def __init__(self, dim, num_features=256, *, causal=False, features="positive", scale=None, eps=0.0,
                 relu_offset=1e-3, kind="orthogonal", norms="chi", seed=0):
        super().__init__()
        generator = _performer.FavorProjection(dim, num_features, kind=kind, norms=norms, seed=seed)
        self.register_buffer("W", torch.from_numpy(generator.matrix))
        self._generator = generator
        self.dim, self.num_features = generator.dim, generator.num_features
        self.kind, self.norms, self.seed, self.draw = kind, norms, generator.seed, 0
        self.causal = bool(causal)
        _common._choice("features", features, _favor._FAVOR_FEATURES)
        self.features = features
        self.scale = scale_arg(scale)
        self.eps = _common._real("eps", eps)
        self.relu_offset = _common._real("relu_offset", relu_offset)

    @property
    def projection(self):
        """The performer.FavorProjection generator at the current draw (its matrix is W as drawn)."""
        if self._generator is None:
            generator = _performer.FavorProjection(self.dim, self.num_features, kind=self.kind, norms=self.norms,
                                                   seed=self.seed)
            for _ in range(self.draw):
                generator.redraw()
            self._generator = generator
        return self._generator

    def redraw(self):
        """Replaces W by the generator's next draw (a new tensor of W's dtype and device: a
        backward pending from an earlier forward keeps the W it was computed with)."""
        generator = self.projection
        generator.redraw()
        self.draw += 1
        self.W = torch.from_numpy(generator.matrix).to(dtype=self.W.dtype, device=self.W.device)

    def get_extra_state(self):
        return {"kind": self.kind, "norms": self.norms, "seed": self.seed, "draw": self.draw}

    def set_extra_state(self, state):
        self.kind, self.norms, self.seed, self.draw = state["kind"], state["norms"], state["seed"], state["draw"]
        self._generator = None  # remade at the loaded draw when next needed

    def __getstate__(self):
        # The generator is a libperformer handle, which cannot be pickled: it is remade from
        # (kind, norms, seed, draw) when needed.
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state["_generator"] = None
        return state

    def forward(self, q, k, v, kv_lengths=None, kv_starts=None, initial_state=None, return_state=False):
        return favor_attention(q, k, v, self.W, causal=self.causal, features=self.features, scale=self.scale,
                               eps=self.eps, kv_lengths=kv_lengths, relu_offset=self.relu_offset,
                               kv_starts=kv_starts, initial_state=initial_state, return_state=return_state)

    def extra_repr(self):
        return "dim=%d, num_features=%d, causal=%s, features=%r, scale=%s, eps=%s, seed=%s, draw=%d" % (
            self.dim, self.num_features, self.causal, self.features, self.scale, self.eps, self.seed, self.draw)
