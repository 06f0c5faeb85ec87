"""Full ALS training, delegated to implicit's CPU implementation; returns plain numpy arrays."""

from __future__ import annotations

import os

# implicit warns (and trains ~10x slower) when OpenBLAS runs its own thread pool; this only takes
# effect if BLAS is not loaded yet, so train_als also limits BLAS threads around the fit.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from models.foldin import gram


@dataclass(frozen=True)
class ALSParams:
    """Hyper-parameters of implicit's ``AlternatingLeastSquares`` (CPU, float32).

    ``alpha`` multiplies the raw weights (confidence = alpha * weight, implicit 0.7.3 semantics).
    ``num_threads=0`` lets implicit's OpenMP loop use every core.
    """

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    random_state: int | None = 42
    use_cg: bool = True
    use_native: bool = True
    cg_steps: int = 3
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1 or self.cg_steps < 1:
            raise ValueError("factors, iterations and cg_steps must be >= 1")
        if self.regularization < 0 or self.alpha <= 0:
            raise ValueError("regularization must be >= 0 and alpha > 0")


@dataclass
class ALSModelFactors:
    """A trained model as plain arrays: what serving, fold-in and evaluation need."""

    user_factors: npt.NDArray[np.float32]  # n_users × f, C-contiguous
    item_factors: npt.NDArray[np.float32]  # n_items × f, C-contiguous
    gram: npt.NDArray[np.float32]  # YtY = item_factors.T @ item_factors, f × f
    user_gram: npt.NDArray[np.float32]  # XtX, for folding in new items
    params: ALSParams
    fit_seconds: float
    nnz: int

    @property
    def n_users(self) -> int:
        """Number of user rows."""
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        """Number of item rows."""
        return int(self.item_factors.shape[0])

    @property
    def factors(self) -> int:
        """Latent dimension f."""
        return int(self.item_factors.shape[1])


def train_als(user_items: sp.spmatrix | sp.sparray, params: ALSParams) -> ALSModelFactors:
    """Fit implicit's CPU ALS on a user×item matrix of raw weights and return its factors.

    Rows are users and columns items (implicit >= 0.5 orientation). Training loss is not
    computed (it costs a full extra pass per iteration).
    """
    csr = sp.csr_matrix(user_items, dtype=np.float32)
    if csr.shape[0] == 0 or csr.shape[1] == 0:
        raise ValueError("cannot train on an empty matrix")
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            dtype=np.float32,
            use_native=params.use_native,
            use_cg=params.use_cg,
            iterations=params.iterations,
            calculate_training_loss=False,
            num_threads=params.num_threads,
            random_state=params.random_state,
        )
        model.cg_steps = params.cg_steps
        start = time.perf_counter()
        model.fit(csr, show_progress=False)
        seconds = time.perf_counter() - start
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    return ALSModelFactors(
        user_factors=users,
        item_factors=items,
        gram=gram(items),
        user_gram=gram(users),
        params=params,
        fit_seconds=seconds,
        nnz=int(csr.nnz),
    )


def to_implicit(model: ALSModelFactors) -> AlternatingLeastSquares:
    """An implicit CPU model carrying these factors, for cross-checks against implicit itself."""
    with threadpool_limits(limits=1, user_api="blas"):
        out = AlternatingLeastSquares(
            factors=model.factors,
            regularization=model.params.regularization,
            alpha=model.params.alpha,
            dtype=np.float32,
            use_native=model.params.use_native,
            use_cg=model.params.use_cg,
            iterations=model.params.iterations,
            num_threads=model.params.num_threads,
            random_state=model.params.random_state,
        )
    out.user_factors = model.user_factors.copy()
    out.item_factors = model.item_factors.copy()
    return out
