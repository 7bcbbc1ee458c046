"""How well FAVOR+ random features approximate softmax attention, as a function of the number
of features m: iid vs orthogonal projections, and positive vs hyperbolic vs trigonometric
(sin/cos) features -- the comparison of Choromanski et al., "Rethinking Attention with
Performers" (Figure 4: L = 4096, d = 16, 15 random samples), with libperformer's features.

Run (from the repository root, with the package installed by bindings/python/install-venv.sh):

    .build/pyvenv/bin/python -m pip install matplotlib     # once
    .build/pyvenv/bin/python benchmarks/favor_approximation.py [--png favor_approximation.png]

What is measured, for each seed (15 by default) and each m:
  Q, K: L x d with standard normal entries times sigma, V: L x d standard normal. Two input
  scales by default (--sigma 0.35 0.7): at 0.35 every kernel value exp(q.k/sqrt(d)) is close
  to 1; at 0.7 they spread over orders of magnitude and many are small -- the regime where
  the paper shows positive features beating sin/cos ones. (At sigma = 1 no feature kind
  approximates softmax at these m: the positive estimator's relative variance is about
  exp(|q^ + k^|^2)/m ~ e^8/m.)
  scale 1/sqrt(d) as in softmax attention. The projection W (m x d) is drawn by
  performer.FavorProjection(d, m, kind=..., seed=seed) and the features by
  performer.favor_features (float64).
  - exact:    A = softmax(Q K^T / sqrt(d)) (row-normalized), out = A V;
  - estimate: A^ = D^-1 phi(Q) phi(K)^T with D = diag(phi(Q) phi(K)^T 1) -- the attention
              matrix FAVOR+ attention uses implicitly -- and out^ = A^ V;
  - reported: MSE(A^, A) = mean over entries of (A^ - A)^2 (the attention-matrix estimate;
              the entries are ~1/L, so the MSE is small in absolute terms) and
              MSE(out^, out) (the attention output), averaged over seeds (+- standard deviation).
To keep the run near a minute on two cores, the error is averaged over --queries (512) query
rows drawn at random per seed (each row still attends to all L = 4096 keys, so every A^ row
is exactly the one of the full matrix); that is an unbiased estimate of the full-matrix MSE.

Prints a Markdown table and saves a PNG plot (log-log, MSE vs m, one line per projection x
feature kind, error bars = standard deviation over seeds).
"""

import argparse
import sys
import time

import numpy as np

import performer

CONFIGS = [
    ("iid", "trigonometric"),
    ("orthogonal", "trigonometric"),
    ("iid", "positive"),
    ("orthogonal", "positive"),
    ("iid", "hyperbolic"),
    ("orthogonal", "hyperbolic"),
]


def softmax_rows(scores):
    scores = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=1, keepdims=True)


def measure(args, sigma):
    L, d = args.length, args.dim
    ms = args.ms
    # errors[config][m] = list of (attention MSE, output MSE) over seeds
    errors = {c: {m: [] for m in ms} for c in CONFIGS}
    for seed in range(args.seeds):
        g = np.random.default_rng(1000 + seed)
        q = g.standard_normal((L, d)) * sigma
        k = g.standard_normal((L, d)) * sigma
        v = g.standard_normal((L, d))
        rows = g.choice(L, size=min(args.queries, L), replace=False)
        exact = softmax_rows(q[rows] @ k.T / np.sqrt(d))
        exact_out = exact @ v
        q4, k4 = q[rows][None, None], k[None, None]
        for kind, features in CONFIGS:
            for m in ms:
                projection = performer.FavorProjection(d, m, kind=kind, seed=seed)
                fq = performer.favor_features(q4, projection, features=features)[0, 0]
                fk = performer.favor_features(k4, projection, features=features, is_query=False)[0, 0]
                kernel = fq @ fk.T
                estimate = kernel / kernel.sum(axis=1, keepdims=True)
                errors[(kind, features)][m].append(
                    (np.mean((estimate - exact) ** 2), np.mean((estimate @ v - exact_out) ** 2)))
        print("sigma %g: seed %d done" % (sigma, seed), file=sys.stderr)
    return errors


def summary(errors, m, config, which):
    values = np.array([e[which] for e in errors[config][m]])
    return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0


def table(errors, ms, which, title):
    lines = ["%s (mean +- sd over seeds)" % title, "",
             "| m | " + " | ".join("%s %s" % c for c in CONFIGS) + " |",
             "|---:|" + "---:|" * len(CONFIGS)]
    for m in ms:
        cells = []
        for c in CONFIGS:
            mean, sd = summary(errors, m, c, which)
            cells.append("%.3g +- %.2g" % (mean, sd))
        lines.append("| %d | %s |" % (m, " | ".join(cells)))
    return "\n".join(lines)


def plot(results, ms, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(len(results), 2, figsize=(12, 4.4 * len(results)), squeeze=False)
    styles = {"trigonometric": "tab:red", "positive": "tab:blue", "hyperbolic": "tab:green"}
    for axes, (sigma, errors) in zip(grid, results):
        plot_row(axes, errors, ms, sigma, styles)
    fig.suptitle("FAVOR+ approximation of softmax attention: L = %d, d = %d, %d seeds (error bars: sd over seeds)"
                 % (args.length, args.dim, args.seeds), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_row(axes, errors, ms, sigma, styles):
    for axis, which, label in ((axes[0], 0, "MSE of the attention matrix A^ vs softmax A"),
                               (axes[1], 1, "MSE of the attention output A^V vs AV")):
        for kind, features in CONFIGS:
            stats = [summary(errors, m, (kind, features), which) for m in ms]
            means = np.array([s[0] for s in stats])
            sds = np.array([s[1] for s in stats])
            axis.errorbar(ms, means, yerr=sds, color=styles[features], capsize=3, marker="o", markersize=4,
                          linestyle="-" if kind == "orthogonal" else "--", label="%s, %s" % (features, kind))
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("number of random features m")
        axis.set_title("%s; q, k entries ~ N(0, %g^2)" % (label, sigma), fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=4096, help="L, queries = keys (default 4096)")
    parser.add_argument("--dim", type=int, default=16, help="d (default 16)")
    parser.add_argument("--seeds", type=int, default=15, help="random samples (default 15)")
    parser.add_argument("--queries", type=int, default=512, help="query rows the MSE is averaged over (default 512)")
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.35, 0.7],
                        help="standard deviations of the q, k entries, one experiment each (default 0.35 0.7)")
    parser.add_argument("--ms", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="values of m")
    parser.add_argument("--png", default="favor_approximation.png", help="where to save the plot")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("matplotlib is missing: %s -m pip install matplotlib" % sys.executable)

    start = time.time()
    print("FAVOR+ vs exact softmax attention: L = %d, d = %d, %d seeds, MSE over %d query rows x %d keys; "
          "libperformer %s" % (args.length, args.dim, args.seeds, min(args.queries, args.length), args.length,
                               performer.__version__))
    results = []
    for sigma in args.sigma:
        errors = measure(args, sigma)
        results.append((sigma, errors))
        print("\n## q, k entries ~ N(0, %g^2)\n" % sigma)
        print(table(errors, args.ms, 0, "MSE of the attention matrix A^ (row-normalized phi(Q) phi(K)^T) vs softmax"))
        print()
        print(table(errors, args.ms, 1, "MSE of the attention output A^ V vs softmax(QK^T/sqrt(d)) V"))
    plot(results, args.ms, args, args.png)
    print("\nplot: %s (%.0f s)" % (args.png, time.time() - start))


if __name__ == "__main__":
    main()
