"""The settings of a causal-LM distillation job (a Hugging Face causal-LM teacher): JobCreate's `lm` object.

They mirror the engine's LMConfig and LMTrainSettings (worker/engine/lm_distill.py, lm_train.py) field for field,
defaults included (tests/test_lm_e2e.py checks that they agree), so that the API, the SDK and the engine take the
same settings. A causal-LM job trains by these alone: the classifier `hyperparameters` do not apply to it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LM_METHODS = ("forward_kl", "reverse_kl", "jsd", "offline", "seq_kd", "on_policy")
# Logit KD compares the two models' distributions token by token, so it needs one vocabulary; seq_kd does not.
LOGIT_METHODS = ("forward_kl", "reverse_kl", "jsd", "offline", "on_policy")

LMMethod = Literal["forward_kl", "reverse_kl", "jsd", "offline", "seq_kd", "on_policy"]
Objective = Literal["forward_kl", "reverse_kl", "jsd"]


class LMOptions(BaseModel):
    """How a causal language model is distilled; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    method: LMMethod = Field(
        "forward_kl",
        description="forward_kl / reverse_kl / jsd: online logit KD (the teacher runs on every batch); offline: "
        "logit KD from the teacher's cached top-k signal (`objective` names the divergence); seq_kd: fine-tuning "
        "on the teacher's generations (any tokenizer pair); on_policy: GKD, after `warm_start_epochs` of forward KL a "
        "fraction `on_policy_fraction` of batches are the student's own samples scored by the live teacher",
    )
    objective: Objective = Field("forward_kl", description="offline's divergence")
    epochs: int = Field(4, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    ce_weight: float = Field(0.5, ge=0, le=1, description="weight of the cross-entropy on the data's tokens")
    temperature: float = Field(1.0, gt=0, le=100)
    beta: float = Field(0.5, ge=0, le=1, description="jsd's mixture weight")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    on_policy_fraction: float = Field(0.5, ge=0, le=1, description="on_policy: GKD's lambda, batches sampled")
    on_policy_objective: Objective = Field("reverse_kl", description="on_policy: the divergence on every batch")
    warm_start_epochs: int = Field(1, ge=0, le=1000, description="on_policy: forward-KL epochs on the data first")
    length_bucketing: bool = Field(True, description="batches of rows of similar length (less padding)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, a second forward of each layer"
    )
    max_length: int = Field(64, ge=2, le=8192, description="tokens per row (prompt and completion)")
    max_new_tokens: int = Field(32, ge=1, le=2048, description="tokens the teacher and students generate")
    top_k: int = Field(128, ge=1, le=1024, description="offline: teacher log-probabilities kept per token")
    eval_top_k: int = Field(64, ge=1, le=1024)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    generation_prompts: int = Field(32, ge=1, le=1024, description="held-out prompts whose generations compare")
    seq_kd_samples: int = Field(
        4, ge=0, le=16, description="seq_kd: n > 0 teacher samples per prompt (unbiased), 0 its greedy generations"
    )
    speed: bool = Field(True, description="measure generation speed (tokens per second at batch 1 and 32)")

    def train_fields(self) -> dict:
        """The fields that are the engine's LMTrainSettings."""
        names = ("epochs", "batch_size", "learning_rate", "ce_weight", "temperature", "beta", "objective", "seed",
                 "on_policy_fraction", "on_policy_objective", "warm_start_epochs", "length_bucketing",
                 "gradient_checkpointing")  # fmt: skip
        return {name: getattr(self, name) for name in names}
