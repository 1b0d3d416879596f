"""FedCFA (Jiang et al., AAAI 2025, arXiv 2412.18904): counterfactual learning on shared mean data.

Server: FedAvg, plus a global pool ``(Xg, Yg)`` = the chunk means every client uploaded *this round*
(replaced, not accumulated), broadcast to next round's clients. Client, per batch: CE on the local
batch; factor saliency from the frozen global decoder; for each sample a random pool entry encoded
by the current local encoder; a positive counterfactual (least-salient factors swapped in, target
y) and a negative one (most-salient swapped, soft target); loss
``r0·CE + r1·CE(decoder(z_p), y) + r2·CE(decoder(z_n), ȳ) + λ_FDC·L_FDC`` with r = (1, 5, 5),
k = 24/64 of the factors, λ_FDC = 0.1 (hyperparameters of the reference code). The counterfactual
terms see only detached latents, so they train the decoder; the encoder learns from CE and FDC.

The FDC formula is our design (see :func:`fdc_loss`); ``fdc=False`` reproduces the reference code.
Round 0 has no pool, so clients train with CE (+FDC) only. Privacy: mean images and label
histograms reach the server and every client; ``share_mean_data`` must be left on explicitly and is
logged, ``noise_std`` adds Gaussian noise to the uploaded means (0 = the paper).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.models import SplitModel
from trillium.federated.core.strategies.base import Strategy, fedavg_aggregate
from trillium.federated.core.strategies.counterfactual import (
    chunk_means,
    counterfactual_latents,
    factor_masks,
    factor_saliency,
    fdc_loss,
)
from trillium.federated.core.types import (
    ClientInstruction,
    ClientResult,
    ModelState,
    Scalar,
    StrategyState,
    TensorMap,
)

logger = logging.getLogger(__name__)

POOL_X = "global_x"
POOL_Y = "global_y"
MEAN_X = "mean_x"
MEAN_Y = "mean_y"


@dataclass(kw_only=True)
class FedCFA(Strategy):
    """Server half of FedCFA; hyperparameters default to the reference code's."""

    name = "fedcfa"
    top_k_fraction: float = 24 / 64
    loss_weights: tuple[float, float, float] = (1.0, 5.0, 5.0)
    fdc: bool = True
    fdc_weight: float = 0.1
    mean_batch: int = 128
    noise_std: float = 0.0
    share_mean_data: bool = True
    pool_x: torch.Tensor | None = field(default=None, repr=False)
    pool_y: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.top_k_fraction < 1:
            raise ValueError(f"top_k_fraction must be in (0, 1), got {self.top_k_fraction}")
        if len(self.loss_weights) != 3 or any(w < 0 for w in self.loss_weights):
            raise ValueError(f"loss_weights must be three non-negative numbers, got {self.loss_weights}")
        if self.fdc_weight < 0:
            raise ValueError(f"fdc_weight must be >= 0, got {self.fdc_weight}")
        if self.mean_batch < 1:
            raise ValueError(f"mean_batch must be >= 1, got {self.mean_batch}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not self.share_mean_data:
            raise ValueError("share_mean_data=False: FedCFA cannot run without sharing chunk-mean data")
        logger.warning(
            "FedCFA shares chunk means of %d raw inputs and their label histograms with the server and "
            "all clients (noise_std=%s); no DP or secure aggregation.",
            self.mean_batch,
            self.noise_std,
        )

    def client_config(self) -> dict[str, Scalar]:
        """All client hyperparameters as scalars."""
        r0, r1, r2 = self.loss_weights
        return {
            "cfa_top_k_fraction": self.top_k_fraction,
            "cfa_r0": r0,
            "cfa_r1": r1,
            "cfa_r2": r2,
            "cfa_fdc": self.fdc,
            "cfa_fdc_weight": self.fdc_weight,
            "cfa_mean_batch": self.mean_batch,
            "cfa_noise_std": self.noise_std,
        }

    def client_payload(self, server_round: int, global_weights: ModelState) -> TensorMap:
        """The global pool, once one exists."""
        if self.pool_x is None or self.pool_y is None:
            return {}
        return {POOL_X: self.pool_x, POOL_Y: self.pool_y}

    def aggregate(
        self, server_round: int, global_weights: ModelState, results: Mapping[str, ClientResult]
    ) -> ModelState:
        """FedAvg, and the pool becomes this round's uploaded chunk means (kept if nobody reported)."""
        uploads = [results[cid] for cid in sorted(results) if MEAN_X in results[cid].extras]
        if uploads:
            self.pool_x = torch.cat([r.extras[MEAN_X] for r in uploads])
            self.pool_y = torch.cat([r.extras[MEAN_Y] for r in uploads])
        return fedavg_aggregate(global_weights, results)

    def state_dict(self) -> StrategyState:
        """The pool (``global_x: [M, ...]``, ``global_y: [M, num_classes]``) plus hyperparameters."""
        tensors = (
            {} if self.pool_x is None or self.pool_y is None else {POOL_X: self.pool_x, POOL_Y: self.pool_y}
        )
        return StrategyState(tensors={k: v.clone() for k, v in tensors.items()}, scalars=self.client_config())

    def load_state_dict(self, state: StrategyState) -> None:
        """Restore the pool and hyperparameters."""
        self.pool_x = state.tensors.get(POOL_X)
        self.pool_y = state.tensors.get(POOL_Y)
        s = state.scalars
        self.top_k_fraction = float(s["cfa_top_k_fraction"])
        self.loss_weights = (float(s["cfa_r0"]), float(s["cfa_r1"]), float(s["cfa_r2"]))
        self.fdc = bool(s["cfa_fdc"])
        self.fdc_weight = float(s["cfa_fdc_weight"])
        self.mean_batch = int(s["cfa_mean_batch"])
        self.noise_std = float(s["cfa_noise_std"])


def top_k_for(num_factors: int, fraction: float) -> int:
    """Number of swapped factors: ``round(fraction · C)`` clamped to ``[1, C − 1]`` (24 for C = 64)."""
    return min(max(round(fraction * num_factors), 1), num_factors - 1)


class FedCFAClient(ClientHooks):
    """Client half of FedCFA (see the module docstring)."""

    def __init__(self, config: Mapping[str, Scalar], payload: TensorMap) -> None:
        self.top_k_fraction = float(config["cfa_top_k_fraction"])
        self.weights = (float(config["cfa_r0"]), float(config["cfa_r1"]), float(config["cfa_r2"]))
        self.fdc = bool(config["cfa_fdc"])
        self.fdc_weight = float(config["cfa_fdc_weight"])
        self.mean_batch = int(config["cfa_mean_batch"])
        self.noise_std = float(config["cfa_noise_std"])
        self.pool_x = payload.get(POOL_X)
        self.pool_y = payload.get(POOL_Y)
        self.generator = torch.Generator().manual_seed(int(config.get("local_seed", 0)) + 1)
        self.global_model: SplitModel | None = None
        self.num_classes = 0

    @classmethod
    def from_instruction(cls, instruction: ClientInstruction, client_state: TensorMap) -> FedCFAClient:
        """Hyperparameters from the config, the pool from the payload (absent in round 0)."""
        return cls(instruction.config, instruction.payload)

    def on_train_start(self, model: nn.Module, data: ArrayDataset) -> None:
        """Freeze a copy of the received global model for the saliency."""
        if not isinstance(model, SplitModel):
            raise ValueError("FedCFA needs a SplitModel (encoder/decoder) as model")
        self.global_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_classes = data.num_classes

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``r0·CE + r1·CE_pos + r2·CE_neg + λ·FDC`` (counterfactual terms only once a pool exists)."""
        if not isinstance(model, SplitModel) or self.global_model is None:
            raise ValueError("model must be a SplitModel and on_train_start must run before loss")
        r0, r1, r2 = self.weights
        logits, z = model.forward_with_factors(x)
        ce = F.cross_entropy(logits, y)
        total = r0 * ce
        metrics = {"ce": float(ce.detach())}
        if self.pool_x is not None and self.pool_y is not None and len(self.pool_x) > 0:
            pos, neg = self._counterfactual_losses(model, z, y)
            total = total + r1 * pos + r2 * neg
            metrics |= {"ce_pos": float(pos.detach()), "ce_neg": float(neg.detach())}
        if self.fdc and self.fdc_weight > 0:
            decorrelation = fdc_loss(z)
            total = total + self.fdc_weight * decorrelation
            metrics["fdc"] = float(decorrelation.detach())
        return total, metrics

    def _counterfactual_losses(
        self, model: SplitModel, z: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        global_model, pool_x, pool_y = self.global_model, self.pool_x, self.pool_y
        if global_model is None or pool_x is None or pool_y is None:
            raise ValueError("counterfactuals need the global model and a non-empty pool")
        z = z.detach()
        saliency = factor_saliency(global_model.decoder, z, y)
        m_p, m_n = factor_masks(saliency, top_k_for(z.shape[1], self.top_k_fraction))
        pick = torch.randint(len(pool_x), (len(y),), generator=self.generator)
        with torch.no_grad():
            z_global = model.encoder(pool_x[pick])
        y_onehot = F.one_hot(y, self.num_classes).to(z.dtype)
        z_p, z_n, y_n = counterfactual_latents(
            z, z_global, m_p, m_n, y_onehot=y_onehot, y_global=pool_y[pick]
        )
        return F.cross_entropy(model.decoder(z_p), y), F.cross_entropy(model.decoder(z_n), y_n)

    def on_train_end(self, model: nn.Module, data: ArrayDataset, num_steps: int, lr: float) -> TensorMap:
        """Upload chunk means of the local data (``mean_x: [M, ...]``, ``mean_y: [M, num_classes]``)."""
        mean_x, mean_y = chunk_means(
            data.x,
            data.y,
            data.num_classes,
            self.mean_batch,
            generator=self.generator,
            noise_std=self.noise_std,
        )
        return {MEAN_X: mean_x, MEAN_Y: mean_y}
