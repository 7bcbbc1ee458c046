#!/usr/bin/env python3
"""Issue 8's goals against fast-transformers (FT), as paired ratios on a shared machine.

    python benchmarks/ft_goals.py [N] [ROUNDS] [--fb]

Per round: a 1024³ numpy GEMM, our call, FT's call, the GEMM again; prints the median over
rounds of ours/FT (the goal's ratio) and of each side's fraction of that round's GEMM peak, so
load that comes and goes hits both sides of a ratio alike. Cases (B=1, H=8, D=M=64, float32,
2 threads, new outputs each call as a user gets them): the un-normalized causal product vs
FT's causal_dot_product (--fb: forward+backward), linear attention causal and not vs FT's
CausalLinearAttention / LinearAttention modules. Needs torch and fast-transformers. The
arithmetic these ratios are judged against: benchmarks/results/ft_goals.md.
"""
import sys, time, statistics, numpy as np, torch, performer
torch.set_num_threads(2); performer.set_num_threads(2)
from fast_transformers.causal_product import causal_dot_product
from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
from fast_transformers.attention.linear_attention import LinearAttention
from fast_transformers.masking import FullMask, LengthMask, TriangularCausalMask
B, H, D = 1, 8, 64
args = [a for a in sys.argv[1:] if not a.startswith("--")]
n = int(args[0]) if args else 16384
rounds = int(args[1]) if len(args) > 1 else 5
fb = "--fb" in sys.argv
rng=np.random.default_rng(1)
q,k,v,do=(rng.standard_normal((B,H,n,D),dtype=np.float32) for _ in range(4))
tq,tk,tv=(torch.from_numpy(x) for x in (q,k,v))
tqt,tkt,tvt=(torch.from_numpy(x).transpose(1,2).contiguous() for x in (q,k,v))
lm=LengthMask(torch.full((B,),n,dtype=torch.int64),max_len=n); cm=TriangularCausalMask(n); fm=FullMask(n)
cl,fl=CausalLinearAttention(D),LinearAttention(D)
cp=dict(causal=True,feature_map="identity",normalize=False)
a=np.ones((1024,1024),np.float32)
def ftc():
    with torch.no_grad(): return cl(tqt,tkt,tvt,cm,lm,lm)
def ftf():
    with torch.no_grad(): return fl(tqt,tkt,tvt,fm,lm,lm)
def ftcp():
    with torch.no_grad(): return causal_dot_product(tq,tk,tv)
pairs={"cp fwd":(lambda: performer.linear_attention(q,k,v,**cp), ftcp),
       "linear causal fwd":(lambda: performer.linear_attention(q,k,v,causal=True), ftc),
       "linear full fwd":(lambda: performer.linear_attention(q,k,v), ftf)}
if fb:
    g=[x.clone().requires_grad_(True) for x in (tq,tk,tv)]; tdo=torch.from_numpy(do)
    def ftfb():
        for x in g: x.grad=None
        causal_dot_product(*g).backward(tdo)
    pairs={"cp fwd+bwd":(lambda: (performer.linear_attention(q,k,v,**cp), performer.linear_attention_backward(q,k,v,do,**cp)), ftfb)}
def t(f):
    t0=time.perf_counter(); f(); return time.perf_counter()-t0
F=B*H*4.0*n*D*D*(3 if fb else 1)
for name,(ours,ft) in pairs.items():
    ours(); ft()
    ratio=[];fo=[];ff=[]
    for r in range(rounds):
        g1=t(lambda: a@a); to=t(ours); tf=t(ft); g2=t(lambda: a@a)
        peak=2*1024**3/min(g1,g2)/1e9
        ratio.append(to/tf); fo.append(F/to/1e9/peak); ff.append(F/tf/1e9/peak)
    print(f"N={n} {name:18s} ours/FT median {statistics.median(ratio):.3f} (min {min(ratio):.3f})  ours {statistics.median(fo):.0%} FT {statistics.median(ff):.0%} of paired peak", flush=True)
