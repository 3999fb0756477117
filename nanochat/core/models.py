"""The model contract: everything stages, evals, the engine and the server may use of a model.

A model plugin registers a spec whose factory, given the plugin's options dataclass, returns a
:class:`ModelFactory`. The factory turns a vocabulary size into a JSON-serialisable config, a
config into a :class:`Model` (a ``torch.nn.Module``), and a model into its optimizers. Nothing
outside the plugin reads a model's config or calls methods beyond this contract, so a second
model plugin needs no change anywhere; :mod:`nanochat.testing.model_contract` checks one.

Generation works on a cache of *rows* (slots): each row keeps its own position, so prompts of
different lengths are generated together and a finished row can be reset and reused while the
others go on. ``forward_cached`` runs ``T`` new tokens for every row of the cache, reading
what each row holds and writing the new keys/values at that row's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

LOSS_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class OptimizerSettings:
    """Learning rates by parameter role; a model maps its parameters onto these roles.

    Attributes:
        matrix_lr: hidden 2-D weight matrices (Muon in the GPT).
        embedding_lr: input token embeddings.
        unembedding_lr: the output head.
        scalar_lr: 0-D and 1-D parameters (gains, biases, mixing scalars).
        weight_decay: decoupled weight decay of matrices and embeddings.
        world_size: number of data-parallel ranks the optimizers run under.
    """

    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    scalar_lr: float = 0.5
    weight_decay: float = 0.0
    world_size: int = 1


@runtime_checkable
class GenerationCache(Protocol):
    """Keys and values of a batch of rows, each row with its own position.

    ``positions[b]`` is the number of tokens row ``b`` holds (where its next token goes).
    """

    @property
    def batch_size(self) -> int:
        """Number of rows (slots)."""
        ...

    @property
    def max_len(self) -> int:
        """The most tokens one row can hold."""
        ...

    @property
    def positions(self) -> torch.Tensor:
        """Tokens held per row, a ``(batch_size,)`` long tensor on the model's device."""
        ...

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Empty ``rows`` (every row when None) so they can take a new sequence."""
        ...

    def copy_rows(self, source: int, targets: Sequence[int]) -> None:
        """Make each of ``targets`` hold what row ``source`` holds (one prefill, many samples)."""
        ...


@runtime_checkable
class Model(Protocol):
    """A language model (a ``torch.nn.Module``) as the rest of nanochat sees it."""

    @property
    def sequence_len(self) -> int:
        """The context length the model trains on (rows of data are this long)."""
        ...

    @property
    def max_context(self) -> int:
        """The longest sequence (prompt plus generated tokens) one cache row can hold."""
        ...

    def __call__(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_reduction: str = "mean",
    ) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` in fp32 without targets; else the cross-entropy loss.

        ``targets`` of ``-1`` carry no loss. ``loss_reduction`` is ``mean`` (over targets with
        a loss), ``sum``, or ``none`` (one value per position, shape ``(B*T,)``).
        """
        ...

    def flops_per_token(self) -> int:
        """Training FLOPs (forward + backward) per token at ``sequence_len``, for MFU."""
        ...

    def new_cache(self, batch_size: int, max_len: int | None = None) -> GenerationCache:
        """An empty generation cache of ``batch_size`` rows (``max_len`` <= ``max_context``)."""
        ...

    def forward_cached(
        self, idx: torch.Tensor, cache: GenerationCache, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run ``T`` new tokens ``idx (B, T)`` for rows of ``cache``; fp32 logits ``(B, T,
        vocab)``. ``rows`` (a long tensor of ``B`` distinct row indices) says which cache row
        each line of ``idx`` continues; None means every row, in order. Each such row attends to
        what it holds and to its own new tokens, then its position moves on by ``T``; the other
        rows are untouched.

        Raises:
            ValueError: a row would exceed the cache's ``max_len``.
        """
        ...

    # What nanochat uses of torch.nn.Module.
    def parameters(self, recurse: bool = True) -> Any:
        """The model's parameters."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The tensors saved in checkpoints (safetensors)."""
        ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load tensors saved by :meth:`state_dict`."""
        ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Any:
        """``(name, parameter)`` pairs."""
        ...

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """Move to a device / dtype (returns the model)."""
        ...

    def train(self, mode: bool = True) -> Any:
        """Training mode."""
        ...

    def eval(self) -> Any:
        """Evaluation mode."""
        ...

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients."""
        ...


@runtime_checkable
class ModelFactory(Protocol):
    """What a model spec's factory returns, given the plugin's options."""

    def config(self, vocab_size: int) -> dict[str, Any]:
        """The JSON-serialisable config of a model of these options and vocabulary size.

        It is stored in every checkpoint and is all :meth:`build` needs.
        """
        ...

    def build(self, config: dict[str, Any], device: Any = "cpu") -> Model:
        """A new, initialised model from ``config``, created on ``device``."""
        ...

    def optimizers(self, model: Model, settings: OptimizerSettings) -> list[Any]:
        """The model's optimizers; every parameter group carries ``initial_lr``.

        Each parameter of the model is in exactly one group. The training loop scales every
        group's ``lr`` as ``initial_lr * schedule(step)`` and steps each optimizer in order.
        """
        ...


@runtime_checkable
class ExportingModelFactory(Protocol):
    """A model factory that can also write its models in other tools' formats (optional)."""

    def export_formats(self) -> tuple[str, ...]:
        """The format names :meth:`export` accepts (e.g. ``hf``, ``gguf``)."""
        ...

    def export(self, model: Any, tokenizer: Any, fmt: str, out: Any) -> list[Any]:
        """Write ``model`` (built by this factory) and the run's ``tokenizer`` to ``out`` (a
        path) in format ``fmt``; return the paths written."""
        ...
