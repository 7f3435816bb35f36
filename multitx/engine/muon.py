"""Muon: momentum whose update for each weight matrix is orthogonalised.

Muon (Keller Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural
networks") keeps SGD's Nesterov momentum M (out, in) for a weight matrix W, but steps
along the nearest semi-orthogonal matrix to M instead of M itself: all of M's singular
values set to about 1, so that no direction in the update dominates the others.

    M <- momentum * M + (1 - momentum) * grad
    U  = momentum * M + (1 - momentum) * grad     Nesterov: a look-ahead past M
    O  = orthogonalize(U)                         U = A S Bᵀ (SVD)  ->  about A Bᵀ
    W <- W * (1 - lr * weight_decay) - lr * sqrt(max(1, out / in)) * O

It is meant for the hidden weight matrices of a network (here: the transformer
blocks'); embeddings, heads, norms and biases stay with AdamW (`build_optimizer`
in trainer.py puts them there).
"""

from collections import defaultdict

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

# Quintic Newton-Schulz coefficients from Jordan et al.: chosen to push small singular
# values up fast; the results land in about [0.7, 1.2] rather than exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(updates: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """(..., m, n) -> matrices of the same shape with singular values near 1 and the
    same singular vectors: x <- a x + (b A + c A²) x with A = x xᵀ, `steps` times.

    A leading batch dimension orthogonalises several same-shape matrices in one
    batched matmul (the blocks of a trunk share shapes). Runs in bf16 on a GPU, as
    the reference does, and in fp32 on a CPU, where bf16 matmuls are slow.
    """
    x = updates.to(torch.bfloat16 if updates.is_cuda else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # work on the wide side: A is then (min(m, n), min(m, n))
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # Frobenius norm 1, so every singular value <= 1
    wide = x.size(-1) >= 2 * x.size(-2)
    x = newton_schulz_small_side(x, steps) if wide and x.dtype == torch.float32 else newton_schulz(x, steps)
    return (x.mT if tall else x).to(updates.dtype)


def newton_schulz(x: torch.Tensor, steps: int) -> torch.Tensor:
    """x (..., m, n), m <= n, singular values <= 1: the iteration as written."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT  # (..., m, m)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x


def newton_schulz_small_side(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The same result for a wide x (n >= 2m) in fewer FLOPs: every iterate is f x0 for
    an (m, m) matrix f, a polynomial in A0 = x0 x0ᵀ, so iterate on f and apply it once.
    A_k = f A0 f; f <- (a + b A_k + c A_k²) f. Only in fp32: f grows to a few hundred."""
    a, b, c = NS_COEFFICIENTS
    gram0 = x @ x.mT  # (..., m, m)
    eye = torch.eye(x.size(-2), dtype=x.dtype, device=x.device)
    factor = eye.expand_as(gram0)
    for _ in range(steps):
        gram = factor @ gram0 @ factor  # x_k x_kᵀ (f is symmetric)
        factor = (a * eye + b * gram + c * gram @ gram) @ factor
    return factor @ x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters (out, in). lr ~0.02 is the reference's; it is not on
    AdamW's scale, since each update has a fixed size whatever the gradient's."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5):
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "ns_steps": ns_steps}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon updates weight matrices only, got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            by_shape: dict[torch.Size, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                by_shape[p.shape].append((p, update))
            for (rows, cols), pairs in by_shape.items():
                # Under FSDP each process holds some rows of each matrix (a DTensor). Orthogonalising needs
                # the whole matrix: each update is all-gathered, every process orthogonalises all of them
                # (the same numbers everywhere) and keeps its own rows. The alternative, each process taking
                # whole matrices in turn and scattering the results, does 1/N of the Newton-Schulz work but
                # needs a scatter per matrix; gathering is the simpler exact one (the update is what one
                # process computes), at N times the Newton-Schulz FLOPs, small beside a step's forward and
                # backward (5 iterations of a few (m, m) products per matrix).
                whole = [u.full_tensor() if isinstance(u, DTensor) else u for _, u in pairs]
                orthogonal = orthogonalize(torch.stack(whole), group["ns_steps"])
                scale = max(1.0, rows / cols) ** 0.5  # same RMS per output for tall matrices
                for (p, _), o in zip(pairs, orthogonal, strict=True):
                    if isinstance(p, DTensor):  # this process's rows: sliced here, no communication
                        o = distribute_tensor(o, p.device_mesh, p.placements, src_data_rank=None)
                    p.mul_(1 - lr * decay)
                    p.add_(o, alpha=-lr * scale)
        return loss
