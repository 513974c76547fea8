"""The Triton kernels of lstm-triton (suite/models/lstm_triton.py): the LSTM's time loop, forward and
backward, with the gate math fused into the recurrent product. Imported only when a Triton path runs,
so that TRITON_INTERPRET (read when a kernel is defined) is whatever it is at that moment.

Work split. Program (pb, ph) owns batch rows [pb·BB, pb·BB + BB) and hidden units [ph·BH, ph·BH + BH)
of all four gates. Per step it needs the whole h_{t-1} of its rows (every unit), written by the other
programs of its row block: the programs of one row block exchange h through global memory (L2).

    forward   a_t = pre_t + h_{t-1} W_hhᵀ  (pre = x W_ihᵀ + b: one cuBLAS GEMM before the loop)
              i, f, o = σ(a_i, a_f, a_o), g = tanh(a_g); c_t = f ⊙ c_{t-1} + i ⊙ g; h_t = o ⊙ tanh(c_t)
    backward  δh_t = ∂L/∂out_t + δa_{t+1} W_hh (restricted to this program's units, K = 4H)
              δc_t = δc_{t+1} ⊙ f_{t+1} + δh_t ⊙ o ⊙ (1 - tanh²c_t)
              δa = [δc g i(1-i), δc c_{t-1} f(1-f), δc i (1-g²), δh tanh(c_t) o(1-o)]
              (∂L/∂x and the weight gradients: whole-sequence GEMMs after the loop, in lstm_triton.py)

Two ways to run the loop, same tile code:
  persistent  one launch per direction; each program loops over T; the programs of a row block meet at
              a barrier on a global counter after each step (arrive: atomic add with release semantics
              after a CTA barrier; wait: acquire reads until the count is reached). It needs every
              program resident at once, so the grid is at most the SM count. c (forward) and δc
              (backward) stay in registers for the whole sequence; the program's slice of W_hh (4·BH
              rows or columns) is re-read every step with evict_last, so it stays in L1/L2 on chip
              (Triton gives no explicit hold on shared memory or registers across a loop). A barrier
              that waits too long (a program not resident) gives up and sets an error flag instead of
              hanging; check_barriers() raises on it (at the next launch, or when told to wait).
  stepwise    one launch per time step (the grid is the barrier): simple and always correct; slower
              for long sequences (a launch costs microseconds of CPU per step).
Triton's interpreter runs programs one after another, so a barrier between programs would wait for a
program that never runs: there the persistent kernel uses one hidden tile (one program per row block,
nothing to wait for), and the stepwise kernel tests the multi-tile exchange.

tl.dot of float32 operands uses TF32 on a GPU unless told otherwise: `precision` is "ieee" (full
float32, FMA) or "tf32", chosen by the caller to match torch.backends.cuda.matmul.allow_tf32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

MAX_SPIN = 1 << 22  # barrier polls before giving up (each is an L2 round trip: seconds in all)


def interpreted() -> bool:
    """True when these kernels were defined under TRITON_INTERPRET=1 (they run on the CPU, in numpy)."""
    return type(lstm_fwd_step).__name__ == "InterpretedFunction"


# ---- shared tile code ----------------------------------------------------------------------------------


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))  # in (0, 1]: no overflow for any x
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))  # in (0, 1]: no overflow for any x
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _grid_barrier(counter, target, ok, MAX_SPIN: tl.constexpr):
    """Wait until `target` arrivals at `counter` (a monotone count: step s of n programs waits for
    (s + 1)·n). ok = 1 while every wait so far succeeded; after a timeout ok = 0 and later waits return
    at once (the results are garbage then, and the caller raises)."""
    tl.debug_barrier()  # every thread of this program has issued its stores for this step
    tl.atomic_add(counter, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
    spins = 0
    limit = MAX_SPIN * ok
    while (seen < target) & (spins < limit):
        seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
        spins += 1
    tl.debug_barrier()  # no thread reads the exchanged values before the wait is over
    return tl.where(seen >= target, ok, 0)


@triton.jit
def _gate_preacts(
    pre_t,
    h_prev,
    wt,
    rows,
    cols,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """a = pre_t + h_{t-1} W_hhᵀ for this tile: four (BB, BH) blocks, gates i, f, g, o.
    pre_t: (B, 4H) at step t; h_prev: (B, H); wt: W_hhᵀ, (H, 4H) row-major."""
    rmask = rows < B
    cmask = cols < H
    m = rmask[:, None] & cmask[None, :]
    p = pre_t + rows[:, None] * (4 * H) + cols[None, :]
    a_i = tl.load(p, mask=m, other=0.0)
    a_f = tl.load(p + H, mask=m, other=0.0)
    a_g = tl.load(p + 2 * H, mask=m, other=0.0)
    a_o = tl.load(p + 3 * H, mask=m, other=0.0)
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < H
        # h was written by other programs during the previous step: read it from L2 (.cg), not L1
        h = tl.load(
            h_prev + rows[:, None] * H + ks[None, :],
            mask=rmask[:, None] & kmask[None, :],
            other=0.0,
            cache_modifier=".cg",
        )
        w = wt + ks[:, None] * (4 * H) + cols[None, :]
        wm = kmask[:, None] & cmask[None, :]
        w_i = tl.load(w, mask=wm, other=0.0, eviction_policy="evict_last")
        w_f = tl.load(w + H, mask=wm, other=0.0, eviction_policy="evict_last")
        w_g = tl.load(w + 2 * H, mask=wm, other=0.0, eviction_policy="evict_last")
        w_o = tl.load(w + 3 * H, mask=wm, other=0.0, eviction_policy="evict_last")
        a_i = tl.dot(h, w_i, a_i, input_precision=PRECISION)
        a_f = tl.dot(h, w_f, a_f, input_precision=PRECISION)
        a_g = tl.dot(h, w_g, a_g, input_precision=PRECISION)
        a_o = tl.dot(h, w_o, a_o, input_precision=PRECISION)
    return a_i, a_f, a_g, a_o


@triton.jit
def _cell_forward(a_i, a_f, a_g, a_o, c):
    i = _sigmoid(a_i)
    f = _sigmoid(a_f)
    g = _tanh(a_g)
    o = _sigmoid(a_o)
    c = f * c + i * g
    h = o * _tanh(c)
    return i, f, g, o, c, h


@triton.jit
def _store_gates(p, i, f, g, o, m, H):
    tl.store(p, i, mask=m)
    tl.store(p + H, f, mask=m)
    tl.store(p + 2 * H, g, mask=m)
    tl.store(p + 3 * H, o, mask=m)


@triton.jit
def _load_gates(p, m, H):
    i = tl.load(p, mask=m, other=0.0)
    f = tl.load(p + H, mask=m, other=0.0)
    g = tl.load(p + 2 * H, mask=m, other=0.0)
    o = tl.load(p + 3 * H, mask=m, other=0.0)
    return i, f, g, o


@triton.jit
def _cell_backward(dh, dc, i, f, g, o, c, c_prev):
    """δh_t (total), δc from step t+1 (already times f_{t+1}) -> δa blocks and δc for step t-1."""
    tc = _tanh(c)
    dc = dc + dh * o * (1.0 - tc * tc)
    da_i = dc * g * i * (1.0 - i)
    da_f = dc * c_prev * f * (1.0 - f)
    da_g = dc * i * (1.0 - g * g)
    da_o = dh * tc * o * (1.0 - o)
    return da_i, da_f, da_g, da_o, dc * f


@triton.jit
def _hidden_grad(
    da_t,
    w,
    rows,
    cols,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """(δa_t W_hh)[:, cols]: K = 4H, the four gate blocks of δa_t (B, 4H) against W_hh (4H, H)."""
    rmask = rows < B
    cmask = cols < H
    acc = tl.full((BB, BH), 0.0, tl.float32)  # not tl.zeros: a @jit helper, compiled or interpreted by
    # the TRITON_INTERPRET of when triton was imported, not of when this module was
    for gate in tl.static_range(4):
        for k0 in range(0, H, BK):
            ks = k0 + tl.arange(0, BK)
            kmask = ks < H
            d = tl.load(
                da_t + rows[:, None] * (4 * H) + gate * H + ks[None, :],
                mask=rmask[:, None] & kmask[None, :],
                other=0.0,
                cache_modifier=".cg",
            )
            wv = tl.load(
                w + (gate * H + ks)[:, None] * H + cols[None, :],
                mask=kmask[:, None] & cmask[None, :],
                other=0.0,
                eviction_policy="evict_last",
            )
            acc = tl.dot(d, wv, acc, input_precision=PRECISION)
    return acc


# ---- persistent kernels: the whole time loop in one launch ---------------------------------------------


@triton.jit(do_not_specialize=["T"])
def lstm_fwd_persistent(
    pre,  # (T, B, 4H): x W_ihᵀ + b; overwritten with the gate activations (i, f, g, o) when SAVE
    wt,  # (H, 4H): W_hhᵀ
    hs,  # (T+1, B, H): hs[0] = h0 on entry; hs[t+1] = h_t
    cs,  # (T+1, B, H) when SAVE (cs[0] = c0 on entry), else unused
    c0,  # (B, H)
    cn,  # (B, H): c_T on exit
    sync,  # (n_row_blocks,) int32 zeros: one barrier counter per row block
    err,  # (1,) int32: set to 1 when a barrier timed out
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
    SAVE: tl.constexpr,
    MAX_SPIN: tl.constexpr,
):
    pb = tl.program_id(0)
    ph = tl.program_id(1)
    n_tiles = tl.num_programs(1)
    rows = pb * BB + tl.arange(0, BB)
    cols = ph * BH + tl.arange(0, BH)
    m = (rows < B)[:, None] & (cols < H)[None, :]
    tile = rows[:, None] * H + cols[None, :]
    gate_tile = rows[:, None] * (4 * H) + cols[None, :]
    c = tl.load(c0 + tile, mask=m, other=0.0)
    pre_t = pre
    h_t = hs  # h_{t-1}: slot t of hs
    c_t = cs
    ok = 1
    for t in range(T):
        a_i, a_f, a_g, a_o = _gate_preacts(pre_t, h_t, wt, rows, cols, B, H, BB, BH, BK, PRECISION)
        i, f, g, o, c, h = _cell_forward(a_i, a_f, a_g, a_o, c)
        h_t += B * H
        tl.store(h_t + tile, h, mask=m)
        if SAVE:
            _store_gates(pre_t + gate_tile, i, f, g, o, m, H)
            c_t += B * H
            tl.store(c_t + tile, c, mask=m)
        pre_t += B * 4 * H
        ok = _grid_barrier(sync + pb, (t + 1) * n_tiles, ok, MAX_SPIN)
    tl.store(cn + tile, c, mask=m)
    tl.atomic_max(err, 1 - ok)


@triton.jit(do_not_specialize=["T"])
def lstm_bwd_persistent(
    acts_last,  # acts[T-1]: gate activations (T, B, 4H), pointer at the last step
    cs_last,  # cs[T]: cell states (T+1, B, H), pointer at the last slot
    w,  # (4H, H): W_hh
    gout_last,  # grad_out[T-1]: ∂L/∂out (T, B, H)
    ghn,  # (B, H) ∂L/∂h_T
    gcn,  # (B, H) ∂L/∂c_T
    da_last,  # δa[T-1]: (T, B, 4H) output, the gate pre-activation gradients
    gh0,  # (B, H) output ∂L/∂h0
    gc0,  # (B, H) output ∂L/∂c0
    sync,
    err,
    T,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
    MAX_SPIN: tl.constexpr,
):
    pb = tl.program_id(0)
    ph = tl.program_id(1)
    n_tiles = tl.num_programs(1)
    rows = pb * BB + tl.arange(0, BB)
    cols = ph * BH + tl.arange(0, BH)
    m = (rows < B)[:, None] & (cols < H)[None, :]
    tile = rows[:, None] * H + cols[None, :]
    gate_tile = rows[:, None] * (4 * H) + cols[None, :]
    dc = tl.load(gcn + tile, mask=m, other=0.0)
    dh_next = tl.load(ghn + tile, mask=m, other=0.0)  # ∂L/∂h_t through step t+1 (at t = T-1: from h_T)
    acts_t = acts_last
    c_t = cs_last
    gout_t = gout_last
    da_t = da_last
    ok = 1
    for s in range(T):  # t = T-1-s
        dh = dh_next + tl.load(gout_t + tile, mask=m, other=0.0)
        i, f, g, o = _load_gates(acts_t + gate_tile, m, H)
        c = tl.load(c_t + tile, mask=m, other=0.0)
        c_prev = tl.load(c_t - B * H + tile, mask=m, other=0.0)
        da_i, da_f, da_g, da_o, dc = _cell_backward(dh, dc, i, f, g, o, c, c_prev)
        _store_gates(da_t + gate_tile, da_i, da_f, da_g, da_o, m, H)
        ok = _grid_barrier(sync + pb, (s + 1) * n_tiles, ok, MAX_SPIN)
        dh_next = _hidden_grad(da_t, w, rows, cols, B, H, BB, BH, BK, PRECISION)  # at s = T-1: ∂L/∂h0
        acts_t -= B * 4 * H
        da_t -= B * 4 * H
        c_t -= B * H
        gout_t -= B * H
    tl.store(gh0 + tile, dh_next, mask=m)
    tl.store(gc0 + tile, dc, mask=m)
    tl.atomic_max(err, 1 - ok)


# ---- stepwise kernels: one launch per time step ------------------------------------------------------


@triton.jit
def lstm_fwd_step(
    pre_t,  # (B, 4H) at step t; overwritten with the activations when SAVE
    wt,
    h_prev,  # (B, H)
    h_out,  # (B, H)
    c_prev,  # (B, H)
    c_out,  # (B, H), a different buffer from c_prev
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
    SAVE: tl.constexpr,
):
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.program_id(1) * BH + tl.arange(0, BH)
    m = (rows < B)[:, None] & (cols < H)[None, :]
    tile = rows[:, None] * H + cols[None, :]
    a_i, a_f, a_g, a_o = _gate_preacts(pre_t, h_prev, wt, rows, cols, B, H, BB, BH, BK, PRECISION)
    c = tl.load(c_prev + tile, mask=m, other=0.0)
    i, f, g, o, c, h = _cell_forward(a_i, a_f, a_g, a_o, c)
    tl.store(h_out + tile, h, mask=m)
    tl.store(c_out + tile, c, mask=m)
    if SAVE:
        _store_gates(pre_t + rows[:, None] * (4 * H) + cols[None, :], i, f, g, o, m, H)


@triton.jit
def lstm_bwd_step(
    acts_t,  # (B, 4H)
    c_t,  # (B, H) c_t
    c_prev,  # (B, H) c_{t-1}
    gout_t,  # (B, H)
    da_next,  # (B, 4H) δa_{t+1} when HAS_NEXT
    ghn,  # (B, H) ∂L/∂h_T, used at t = T-1 (not HAS_NEXT)
    dc_in,  # (B, H) δc from step t+1
    dc_out,  # (B, H) δc for step t-1, a different buffer
    da_t,  # (B, 4H) output
    w,
    B,
    H,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
    HAS_NEXT: tl.constexpr,
):
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.program_id(1) * BH + tl.arange(0, BH)
    m = (rows < B)[:, None] & (cols < H)[None, :]
    tile = rows[:, None] * H + cols[None, :]
    gate_tile = rows[:, None] * (4 * H) + cols[None, :]
    if HAS_NEXT:
        dh = _hidden_grad(da_next, w, rows, cols, B, H, BB, BH, BK, PRECISION)
    else:
        dh = tl.load(ghn + tile, mask=m, other=0.0)
    dh += tl.load(gout_t + tile, mask=m, other=0.0)
    i, f, g, o = _load_gates(acts_t + gate_tile, m, H)
    c = tl.load(c_t + tile, mask=m, other=0.0)
    cp = tl.load(c_prev + tile, mask=m, other=0.0)
    dc = tl.load(dc_in + tile, mask=m, other=0.0)
    da_i, da_f, da_g, da_o, dc = _cell_backward(dh, dc, i, f, g, o, c, cp)
    _store_gates(da_t + gate_tile, da_i, da_f, da_g, da_o, m, H)
    tl.store(dc_out + tile, dc, mask=m)


# ---- host side: tiles, launches -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one layer's loop runs: which kernel, the tile, the dot precision."""

    kernel: str  # "persistent" | "stepwise"
    block_b: int  # BB: batch rows per program (>= 16: tl.dot's minimum)
    block_h: int  # BH: hidden units per program, all four gates
    block_k: int  # BK: the reduction chunk
    num_warps: int
    precision: str  # "ieee" | "tf32"
    grid: tuple[int, int]  # (row blocks, hidden tiles)

    def describe(self) -> str:
        return (
            f"{self.kernel} kernel, tile {self.block_b}x{self.block_h} (4 gates), "
            f"{self.grid[0]}x{self.grid[1]} programs, dot {self.precision}"
        )


def _pow2(n: int, low: int = 16) -> int:
    return max(low, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def make_plan(B: int, H: int, device: torch.device, kernel: str = "auto", precision: str = "ieee") -> Plan:
    """The plan for this device: its SM count on a GPU; under the interpreter, no residency limit but one
    hidden tile for the persistent kernel (its programs run one after another)."""
    if interpreted():
        return choose_tiles(B, H, 1 << 30, kernel, precision, one_hidden_tile=True)
    return choose_tiles(B, H, sm_count(device), kernel, precision)


def choose_tiles(
    B: int, H: int, n_sm: int, kernel: str = "auto", precision: str = "ieee", one_hidden_tile: bool = False
) -> Plan:
    """Choose the tile. Persistent: the grid must fit the SMs at one program each; among the tiles that
    fit, the least work per program (the step time), then the least traffic per program (h rows and
    W_hh slice, (BB + 4 BH) H). Stepwise (or persistent that does not fit, under "auto"): 16x16 tiles
    grown until the grid is at most 4x the SMs."""
    if kernel not in ("auto", "persistent", "stepwise"):
        raise ValueError(f"unknown kernel {kernel!r}; use auto, persistent or stepwise")
    if precision not in ("ieee", "tf32"):
        raise ValueError(f"unknown dot precision {precision!r}; use ieee or tf32")
    bk = 16 if H <= 16 else 32
    if kernel in ("auto", "persistent"):
        if one_hidden_tile:
            bb, bh = 16, _pow2(H)
            return Plan("persistent", bb, bh, bk, 4, precision, (math.ceil(B / bb), 1))
        best = None
        for bb in (16, 32, 64, 128):
            for bh in (16, 32, 64):
                grid = (math.ceil(B / bb), math.ceil(H / bh))
                if grid[0] * grid[1] > n_sm or (bb > 16 and bb >= 2 * _pow2(B)):
                    continue
                cost = (bb * bh, bb + 4 * bh)
                if best is None or cost < best[0]:
                    best = (cost, bb, bh, grid)
        if best is not None:
            _, bb, bh, grid = best
            return Plan("persistent", bb, bh, bk, 4 if bb * bh <= 512 else 8, precision, grid)
        if kernel == "persistent":
            raise ValueError(
                f"the persistent kernel needs at most {n_sm} programs (one per SM); B={B}, H={H} needs more "
                "even at the largest tile: use kernel='stepwise' or 'auto'"
            )
    bb, bh = 16, 16
    while math.ceil(B / bb) * math.ceil(H / bh) > 4 * n_sm and bb < 128:
        bb, bh = (bb * 2, bh) if bb <= bh else (bb, bh * 2)
    return Plan("stepwise", bb, bh, bk, 4, precision, (math.ceil(B / bb), math.ceil(H / bh)))


class BarrierTimeout(RuntimeError):
    pass


# Persistent launches whose error flag is still on its way to the host: (pinned host copy, event, plan).
# The flag is read when its copy has landed, so no launch waits on the GPU (a .item() after each kernel
# would stall the stream between the forward and the backward's GEMMs); a timeout raises at the next call.
_pending: list[tuple[torch.Tensor, object, Plan]] = []


def _watch(err: torch.Tensor, plan: Plan) -> None:
    if err.device.type != "cuda":
        _pending.append((err, None, plan))
    else:
        host = torch.empty(1, dtype=torch.int32, pin_memory=True)
        host.copy_(err, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        _pending.append((host, event, plan))
    check_barriers(wait=err.device.type != "cuda")


def check_barriers(wait: bool = False) -> None:
    """Raise BarrierTimeout if a finished persistent launch gave up at a barrier (its results are wrong).
    wait=True waits for every pending launch first (the tests do; a timing loop need not)."""
    done = []
    for item in list(_pending):
        flag, event, _ = item
        if event is not None:
            if wait:
                event.synchronize()  # type: ignore[attr-defined]
            elif not event.query():  # type: ignore[attr-defined]
                continue
        done.append(item)
        _pending.remove(item)
    for flag, _, plan in done:
        if flag.item():
            _pending.clear()
            raise BarrierTimeout(
                f"lstm-triton: a grid barrier of the persistent kernel timed out ({plan.describe()}): not "
                "every program was resident (another kernel on the GPU?); run with kernel='stepwise'"
            )


def forward(pre, w_hh, h0, c0, plan: Plan, save: bool):
    """pre (T, B, 4H) = x W_ihᵀ + b_ih + b_hh, contiguous, float32; overwritten with the gate activations
    when save. Returns hs (T+1, B, H) (hs[0] = h0), cs (T+1, B, H) when save else None, c_T (B, H)."""
    check_barriers()
    T, B, H4 = pre.shape
    H = H4 // 4
    hs = pre.new_empty(T + 1, B, H)
    hs[0] = h0
    cs = pre.new_empty(T + 1, B, H) if save else None
    if cs is not None:
        cs[0] = c0
    c0 = c0.contiguous()
    wt = w_hh.t().contiguous()
    meta = dict(BB=plan.block_b, BH=plan.block_h, BK=plan.block_k, PRECISION=plan.precision)
    if plan.kernel == "persistent":
        sync = torch.zeros(plan.grid[0], dtype=torch.int32, device=pre.device)
        err = torch.zeros(1, dtype=torch.int32, device=pre.device)
        cn = torch.empty_like(c0)
        lstm_fwd_persistent[plan.grid](
            pre,
            wt,
            hs,
            cs if cs is not None else hs,
            c0,
            cn,
            sync,
            err,
            T,
            B,
            H,
            SAVE=save,
            MAX_SPIN=MAX_SPIN,
            num_warps=plan.num_warps,
            num_stages=1,
            **meta,
        )
        _watch(err, plan)
        return hs, cs, cn
    # training keeps every c_t; inference ping-pongs c between two buffers
    slots, n_slots = (cs, T + 1) if cs is not None else (pre.new_empty(2, B, H), 2)
    c_prev = c0
    for t in range(T):
        c_out = slots[(t + 1) % n_slots]
        lstm_fwd_step[plan.grid](
            pre[t], wt, hs[t], hs[t + 1], c_prev, c_out, B, H, SAVE=save, num_warps=plan.num_warps, **meta
        )
        c_prev = c_out
    return hs, cs, c_prev.clone()


def backward(acts, hs, cs, w_hh, grad_out, grad_hn, grad_cn, plan: Plan):
    """The loop of the backward. Returns δa (T, B, 4H) (gate pre-activation gradients), ∂L/∂h0, ∂L/∂c0."""
    check_barriers()
    T, B, H4 = acts.shape
    H = H4 // 4
    w = w_hh.contiguous()
    grad_out, grad_hn, grad_cn = grad_out.contiguous(), grad_hn.contiguous(), grad_cn.contiguous()
    da = torch.empty_like(acts)
    meta = dict(BB=plan.block_b, BH=plan.block_h, BK=plan.block_k, PRECISION=plan.precision)
    if plan.kernel == "persistent":
        sync = torch.zeros(plan.grid[0], dtype=torch.int32, device=acts.device)
        err = torch.zeros(1, dtype=torch.int32, device=acts.device)
        gh0, gc0 = torch.empty_like(grad_hn), torch.empty_like(grad_cn)
        lstm_bwd_persistent[plan.grid](
            acts[T - 1],
            cs[T],
            w,
            grad_out[T - 1],
            grad_hn,
            grad_cn,
            da[T - 1],
            gh0,
            gc0,
            sync,
            err,
            T,
            B,
            H,
            MAX_SPIN=MAX_SPIN,
            num_warps=plan.num_warps,
            num_stages=1,
            **meta,
        )
        _watch(err, plan)
        return da, gh0, gc0
    ring = [grad_cn.clone(), torch.empty_like(grad_cn)]  # δc ping-pongs: iteration k reads ring[k % 2]
    for k in range(T):
        t = T - 1 - k
        has_next = t < T - 1
        lstm_bwd_step[plan.grid](
            acts[t],
            cs[t + 1],
            cs[t],
            grad_out[t],
            da[t + 1] if has_next else da[t],
            grad_hn,
            ring[k % 2],
            ring[(k + 1) % 2],
            da[t],
            w,
            B,
            H,
            HAS_NEXT=has_next,
            num_warps=plan.num_warps,
            **meta,
        )
    return da, da[0] @ w, ring[T % 2]
