"""Lookahead (Zhang et al. 2019): a wrapper that makes any optimizer take slower, steadier steps.

Every `k` steps of the inner optimizer, slow weights move `alpha` of the way towards the fast
ones, and the fast weights restart from there.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

# The hook registries torch's Optimizer.__init__ creates; Lookahead owns its own.
_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def _check_k_alpha(k: Any, alpha: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number in (0, 1], got {alpha!r}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be a finite number in (0, 1], got {alpha!r}")


class Lookahead(Optimizer):
    """Wraps `opt`; itself a `torch.optim.Optimizer` whose groups, state and defaults are `opt`'s.

    Torch schedulers, Lightning and `set_hyper` therefore act on the inner optimizer directly.
    """

    def __init__(self, opt: Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        if not isinstance(opt, Optimizer):
            raise TypeError(f"opt must be a torch.optim.Optimizer, got {type(opt).__name__}")
        _check_k_alpha(k, alpha)
        # Not Optimizer.__init__: it would build groups and state of its own.
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self.opt, self.k, self.alpha = opt, k, alpha
        self.count = 0
        self.slow_weights: list[list[Tensor]] | None = None
        self._skip_next = False

    # Groups, state and defaults are the inner optimizer's, also after it reloads them.
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.opt.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.opt.param_groups = value

    @property
    def state(self) -> Any:
        return self.opt.state

    @state.setter
    def state(self, value: Any) -> None:
        self.opt.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.opt.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.opt.defaults = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- the AccelOptimizer interface, delegated --------------------------------------------

    @property
    def hypers(self) -> list[dict[str, Any]]:
        return self.opt.hypers

    def set_hyper(self, name: str, value: Any) -> None:
        self.opt.set_hyper(name, value)

    def set_hypers(self, **kwargs: Any) -> None:
        self.opt.set_hypers(**kwargs)

    def freeze_to(self, n: int) -> None:
        self.opt.freeze_to(n)

    def freeze(self) -> None:
        self.opt.freeze()

    def unfreeze(self) -> None:
        self.opt.unfreeze()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.opt.add_param_group(param_group)
        if self.slow_weights is not None:
            self.slow_weights.append([p.detach().clone() for p in self.param_groups[-1]["params"]])

    def clear_state(self) -> None:
        """Clear the inner optimizer's statistics and forget the slow weights."""
        self.opt.clear_state()
        self.count, self.slow_weights = 0, None

    def skip_next_step(self) -> None:
        """The next `step()` runs its closure only: no weight, count or state changes."""
        self._skip_next = True

    # -- stepping -------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every `k`-th also syncs slow and fast weights."""
        if self._skip_next:
            self._skip_next = False
            if closure is None:
                return None
            with torch.enable_grad():
                return closure()
        if self.slow_weights is None:
            self.slow_weights = [
                [p.detach().clone() for p in g["params"]] for g in self.param_groups
            ]
        loss = self.opt.step(closure) if closure is not None else self.opt.step()
        self.count += 1
        if self.count % self.k == 0:
            with torch.no_grad():
                for slow_group, group in zip(self.slow_weights, self.param_groups):
                    for slow, fast in zip(slow_group, group["params"]):
                        slow.add_(fast - slow, alpha=self.alpha)
                        fast.copy_(slow)
        return loss

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state_dict plus a `lookahead` entry (count, slow weights)."""
        sd = self.opt.state_dict()
        sd["lookahead"] = {
            "count": self.count,
            "k": self.k,
            "alpha": self.alpha,
            "slow_weights": self.slow_weights,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load both parts; on a mismatch raise ValueError and change nothing."""
        if "lookahead" not in state_dict:
            raise ValueError("state_dict has no 'lookahead' entry: it was not saved by Lookahead")
        inner = {k: v for k, v in state_dict.items() if k != "lookahead"}
        own = state_dict["lookahead"]
        if not isinstance(own, dict) or not {"count", "k", "alpha", "slow_weights"} <= set(own):
            raise ValueError(
                "the state_dict's 'lookahead' entry must hold count, k, alpha and slow_weights"
            )
        _check_k_alpha(own["k"], own["alpha"])
        count = own["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"the lookahead step count must be an int >= 0, got {count!r}")
        slow = own["slow_weights"]
        if slow is not None:
            groups = self.param_groups
            shapes_ok = len(slow) == len(groups) and all(
                len(s) == len(g["params"])
                and all(a.shape == p.shape for a, p in zip(s, g["params"]))
                for s, g in zip(slow, groups)
            )
            if not shapes_ok:
                raise ValueError("the slow weights in state_dict do not match this optimizer's")
        self.opt.load_state_dict(inner)
        self.count, self.k, self.alpha = own["count"], own["k"], own["alpha"]
        self.slow_weights = (
            None
            if slow is None
            else [
                [s.to(device=p.device, dtype=p.dtype).clone() for s, p in zip(sg, g["params"])]
                for sg, g in zip(slow, self.param_groups)
            ]
        )


__all__ = ["Lookahead"]
