"""K runs' copies of one network as stacked tensors (run axis first), and the optimizers that step each run's
slice in place: the weights of mnist_gan.gan.stacked.StackedStep."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize


def stack_tensors(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One tensor (K, ...) of K runs' tensors, detached from them."""
    return torch.stack([t.detach() for t in tensors]).contiguous()  # (K, ...)


def copied_state(state: dict) -> dict:
    """An optimizer state_dict whose tensors are copies (load_state_dict would alias them)."""
    return {**state, "state": {index: {key: value.clone() if torch.is_tensor(value) else value
                                        for key, value in entry.items()}
                               for index, entry in state["state"].items()}}


class StackedNet:
    """One network (G or D) of K runs: stacked parameters and buffers, and a plain copy that vmap calls."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.names = [name for name, _ in modules[0].named_parameters()]
        self.buffer_names = [name for name, _ in modules[0].named_buffers()]
        self.params = {name: stack_tensors([dict(m.named_parameters())[name] for m in modules]).requires_grad_()
                       for name in self.names}
        self.buffers = {name: stack_tensors([dict(m.named_buffers())[name] for m in modules])
                        for name in self.buffer_names}
        self.base = copy.deepcopy(modules[0])
        # Spectral normalisation: layer prefix -> (its weight's parameter name, u's, v's, eps); called plain
        self.spectral: dict[str, tuple[str, str, str, float]] = {}
        for prefix, layer in list(self.base.named_modules()):
            if parametrize.is_parametrized(layer, "weight"):
                norm = layer.parametrizations.weight[0]
                key = f"{prefix}.parametrizations.weight"
                self.spectral[prefix] = (f"{key}.original", f"{key}.0._u", f"{key}.0._v", norm.eps)
                # The copy shares its parametrised class with the run's own layer, and removing the
                # parametrisation deletes the class' `weight` property: give the copy a class of its own first
                own_class = type(layer.__class__)
                layer.__class__ = own_class(layer.__class__.__name__, layer.__class__.__bases__,
                                            dict(layer.__class__.__dict__))
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)

    def weights(self, training: bool) -> dict[str, torch.Tensor]:
        """The tensors the plain copy takes: parameters (spectrally normalised, after one power iteration per
        call in training mode, as the parametrisation does) and buffers, each (K, ...)."""
        weights = {**self.params, **self.buffers}
        for prefix, (original, u, v, eps) in self.spectral.items():
            weights.pop(u), weights.pop(v)
            weights[f"{prefix}.weight"] = normalised_weight(weights.pop(original), self.buffers[u],
                                                            self.buffers[v], eps, training)
        return weights

    def module_views(self, k: int) -> list[nn.Parameter]:
        """Run k's parameters as Parameters that share the stacked storage (an optimizer steps them in place)."""
        return [nn.Parameter(self.params[name].detach()[k]) for name in self.names]

    def buffers_from(self, module: nn.Module, k: int) -> None:
        """Run k's buffers from `module`, where something outside the stack changed them."""
        with torch.no_grad():
            for name, tensor in module.named_buffers():
                self.buffers[name][k].copy_(tensor)

    def copy_into(self, module: nn.Module, k: int) -> None:
        """Write run k's slice into `module` (its parameters and buffers)."""
        with torch.no_grad():
            for name, tensor in module.named_parameters():
                tensor.copy_(self.params[name][k])
            for name, tensor in module.named_buffers():
                tensor.copy_(self.buffers[name][k])


def normalised_weight(original: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float,
                      training: bool) -> torch.Tensor:
    """Each run's weight (K, out, ...) over its largest singular value, u (K, out) and v (K, in) updated in place
    by one power iteration in training mode (torch.nn.utils.parametrizations.spectral_norm's maths)."""
    matrix = original.flatten(2)  # (K, out, in)
    if training:
        with torch.no_grad():
            u.copy_(nn.functional.normalize(torch.bmm(matrix, v.unsqueeze(2)).squeeze(2), dim=1, eps=eps))
            v.copy_(nn.functional.normalize(torch.bmm(matrix.transpose(1, 2), u.unsqueeze(2)).squeeze(2),
                                            dim=1, eps=eps))
    sigma = (u.clone() * torch.bmm(matrix, v.clone().unsqueeze(2)).squeeze(2)).sum(1)  # (K,)
    return original / sigma.view(-1, *[1] * (original.dim() - 1))


def view_optimizer(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """An optimizer of `optimizer`'s kind and settings over `params`, starting from its state."""
    settings = {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
    view = type(optimizer)(params, **settings)
    view.load_state_dict(copied_state(optimizer.state_dict()))
    return view
