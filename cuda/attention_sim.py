"""attention_sim.py - cuda/attention.cu transcribed to numpy (float64): the same
blocks of 8 warps, tiles of 32 keys/queries, causal masks, GQA group mapping,
online softmax and flat index arithmetic, so the kernels' bookkeeping can be
checked without a GPU. Forward against a direct softmax attention; backward
(recomputed lse, D = rowsum(dout*out), dq kernel, dk/dv kernel) against
central differences of the forward. Run: python3 cuda/attention_sim.py
(prints max abs errors: ~1e-16 forward, ~1e-9 backward; asserts 1e-12 and 1e-6;
a minute or two). Keep it in step with
the kernels when they change."""
import numpy as np
W, BK = 8, 32
def fwd(q, kc, vc, T, pos0, H, KV, hd):
    ldq, ldkv = H*hd, KV*hd
    out = np.full(T*ldq, np.nan); lse = np.full(H*T, np.nan)
    q=q.ravel(); kc=kc.ravel(); vc=vc.ravel()
    scale = 1/np.sqrt(hd)
    for bx in range((T+W-1)//W):
        for h in range(H):
            g = h // (H//KV)
            t_last = min(T-1, bx*W + W-1); kend = pos0 + t_last + 1
            st = {}
            for w in range(W):
                t = bx*W+w
                Qs = q[t*ldq + h*hd: t*ldq + h*hd + hd] if t < T else np.zeros(hd)
                st[w] = dict(t=t, Q=Qs, o=np.zeros(hd), m=-np.inf, l=0.0)
            for k0 in range(0, kend, BK):
                Ks = np.zeros((BK, hd)); Vs = np.zeros((BK, hd))
                for j in range(BK):
                    key = k0+j
                    if key < kend:
                        Ks[j] = kc[key*ldkv + g*hd: key*ldkv + g*hd + hd]; Vs[j] = vc[key*ldkv + g*hd: key*ldkv+g*hd+hd]
                for w in range(W):
                    S = st[w]; t = S['t']
                    if t >= T: continue
                    qpos = pos0 + t
                    keys = k0 + np.arange(BK); vis = keys <= qpos
                    s = np.where(vis, Ks @ S['Q'] * scale, -np.inf)
                    m_new = max(S['m'], s.max())
                    p = np.where(vis, np.exp(s - m_new), 0)
                    alpha = np.exp(S['m'] - m_new)
                    S['l'] = S['l']*alpha + p.sum(); S['m'] = m_new
                    S['o'] = S['o']*alpha + p @ Vs
            for w in range(W):
                S = st[w]; t = S['t']
                if t >= T: continue
                out[t*ldq + h*hd: t*ldq+h*hd+hd] = S['o']/S['l']
                lse[h*T+t] = S['m'] + np.log(S['l'])
    return out, lse

def bwd(dout, q, k, v, T, H, KV, hd):
    ldq, ldkv = H*hd, KV*hd
    o, lse = fwd(q, k, v, T, 0, H, KV, hd)
    dout = dout.ravel(); q = q.ravel(); k = k.ravel(); v = v.ravel()
    D = np.zeros(H*T)
    for t in range(T):
        for h in range(H):
            D[h*T+t] = dout[t*H*hd+h*hd: t*H*hd+h*hd+hd] @ o[t*H*hd+h*hd: t*H*hd+h*hd+hd]
    scale = 1/np.sqrt(hd)
    dq = np.full(T*ldq, np.nan)
    for bx in range((T+W-1)//W):
        for h in range(H):
            g = h//(H//KV)
            kend = min(T-1, bx*W+W-1)+1
            acc = {w: np.zeros(hd) for w in range(W)}
            for k0 in range(0, kend, BK):
                Ks = np.zeros((BK, hd)); Vs = np.zeros((BK, hd))
                for j in range(BK):
                    key = k0+j
                    if key < kend:
                        Ks[j] = k[key*ldkv+g*hd: key*ldkv+g*hd+hd]; Vs[j] = v[key*ldkv+g*hd: key*ldkv+g*hd+hd]
                for w in range(W):
                    t = bx*W+w
                    if t >= T: continue
                    Q = q[t*ldq+h*hd: t*ldq+h*hd+hd]; O = dout[t*ldq+h*hd: t*ldq+h*hd+hd]
                    keys = k0+np.arange(BK)
                    ds = np.zeros(BK)
                    for j in range(BK):
                        if keys[j] <= t:
                            p = np.exp(Q@Ks[j]*scale - lse[h*T+t]); dp = O@Vs[j]
                            ds[j] = p*(dp - D[h*T+t])*scale
                    acc[w] += ds @ Ks
            for w in range(W):
                t = bx*W+w
                if t < T: dq[t*ldq+h*hd: t*ldq+h*hd+hd] = acc[w]
    dk = np.full(T*ldkv, np.nan); dv = np.full(T*ldkv, np.nan)
    group = H//KV
    for bx in range((T+W-1)//W):
        for g in range(KV):
            ak = {w: np.zeros(hd) for w in range(W)}; av = {w: np.zeros(hd) for w in range(W)}
            i_first = bx*W
            for h in range(g*group, (g+1)*group):
                for i0 in range(i_first, T, BK):
                    Qs = np.zeros((BK, hd)); Os = np.zeros((BK, hd)); Ls = np.zeros(BK); Ds = np.zeros(BK)
                    for i in range(BK):
                        tq = i0+i
                        if tq < T:
                            Qs[i] = q[tq*ldq+h*hd: tq*ldq+h*hd+hd]; Os[i] = dout[tq*ldq+h*hd: tq*ldq+h*hd+hd]
                            Ls[i] = lse[h*T+tq]; Ds[i] = D[h*T+tq]
                    for w in range(W):
                        j = bx*W+w
                        if j >= T: continue
                        Kw = k[j*ldkv+g*hd: j*ldkv+g*hd+hd]; Vw = v[j*ldkv+g*hd: j*ldkv+g*hd+hd]
                        p = np.zeros(BK); ds = np.zeros(BK)
                        for lane in range(BK):
                            tq = i0+lane
                            if tq < T and j <= tq:
                                p[lane] = np.exp(Qs[lane]@Kw*scale - Ls[lane]); dp = Os[lane]@Vw
                                ds[lane] = p[lane]*(dp - Ds[lane])*scale
                        av[w] += p @ Os; ak[w] += ds @ Qs
            for w in range(W):
                j = bx*W+w
                if j < T:
                    dk[j*ldkv+g*hd: j*ldkv+g*hd+hd] = ak[w]; dv[j*ldkv+g*hd: j*ldkv+g*hd+hd] = av[w]
    return dq, dk, dv

def ref_fwd(q, k, v, T, pos0, H, KV, hd):
    out = np.zeros((T, H, hd)); q = q.reshape(T, H, hd); k = k.reshape(-1, KV, hd); v = v.reshape(-1, KV, hd)
    for h in range(H):
        g = h//(H//KV)
        for t in range(T):
            n = pos0+t+1
            s = k[:n, g] @ q[t, h] / np.sqrt(hd); p = np.exp(s - s.max()); p /= p.sum()
            out[t, h] = p @ v[:n, g]
    return out.ravel()

rng = np.random.default_rng(0)
for (T, pos0, H, KV, hd) in [(1,0,1,1,8),(1,63,6,2,16),(64,0,6,2,16),(7,33,4,1,64),(17,47,8,8,8),(5,2,4,2,128),(70,0,4,2,8)]:
    q = rng.uniform(-2,2,T*H*hd); k = rng.uniform(-2,2,(pos0+T)*KV*hd); v = rng.uniform(-1,1,(pos0+T)*KV*hd)
    o,_ = fwd(q,k,v,T,pos0,H,KV,hd); r = ref_fwd(q,k,v,T,pos0,H,KV,hd)
    print("fwd", T,pos0,H,KV,hd, np.abs(o-r).max())
    assert np.abs(o-r).max() < 1e-12, "forward differs"
# backward vs finite differences of ref_fwd
def fd(T,H,KV,hd):
    q = rng.uniform(-2,2,T*H*hd); k = rng.uniform(-2,2,T*KV*hd); v = rng.uniform(-1,1,T*KV*hd); c = rng.uniform(-1,1,T*H*hd)
    dq,dk,dv = bwd(c,q,k,v,T,H,KV,hd)
    def f(q,k,v): return c @ ref_fwd(q,k,v,T,0,H,KV,hd)
    e=1e-6
    for name, x, g in [("dq",q,dq),("dk",k,dk),("dv",v,dv)]:
        num = np.zeros_like(x)
        for i in range(len(x)):
            xp = x.copy(); xp[i]+=e; xm = x.copy(); xm[i]-=e
            args = {"dq":(xp,k,v),"dk":(q,xp,v),"dv":(q,k,xp)}[name]; args2 = {"dq":(xm,k,v),"dk":(q,xm,v),"dv":(q,k,xm)}[name]
            num[i] = (f(*args)-f(*args2))/(2*e)
        print("bwd", T,H,KV,hd,name, np.abs(num-g).max(), np.isnan(g).any())
        assert np.abs(num-g).max() < 1e-6 and not np.isnan(g).any(), "backward differs"
fd(7,6,2,4); fd(40,4,1,8); fd(1,1,1,8)
