"""The evaluation table: an evaluator's result as readable lines, each figure beside the real-vs-real floor (what
the same figure reads for two halves of the real held-out images, i.e. what "perfect" looks like on this data set
at this sample size) and which way is better; class shares by the data set's names for its classes."""

from __future__ import annotations

import math

ROWS = [  # key, label, format, which way is better
    ("fid", "FID (classifier features)", "{:.3f}", "lower; 0 = the reference's own statistics"),
    ("kid", "KID", "{:.5f}", "lower; about 0 for real data"),
    ("classifier_score", "classifier score", "{:.3f}", "higher; at most the number of classes"),
    ("confidence", "confidence (mean max p)", "{:.3f}", "higher; recognisable images"),
    ("classes_covered", "classes covered", "{}", "classes with >= half a uniform share (5% of 10)"),
    ("class_kl", "class KL", "{:.4f}", "lower; KL(sample classes || real classes)"),
    ("precision", "precision", "{:.3f}", "higher; samples on the real manifold"),
    ("recall", "recall", "{:.3f}", "higher; real variety the samples cover"),
    ("density", "density", "{:.3f}", "about 1 for real data; above: samples crowd the commonest images"),
    ("coverage", "coverage", "{:.3f}", "higher; real variety covered, blind to stray samples"),
    ("memorization", "memorization ratio", "{:.3f}", "< 1: samples nearer training images than real ones"),
]
STACKED_ROWS = [
    ("modes", "modes covered", "{}", "modes (of 1,000) with a sample, as PacGAN counts them"),
    ("mode_kl", "mode KL", "{:.3f}", "lower; KL(sample modes || uniform) in nats"),
]


def _value(result: dict, key: str, fmt: str) -> str:
    value = result.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else str(value)
    text = fmt.format(value)
    if key == "kid" and "kid_std" in result:
        text += f" +- {result['kid_std']:.5f}"
    elif key == "classes_covered":
        text += f" / {result['num_classes']}"
    return text


def format_table(result: dict, title: str = "") -> str:
    """A readable table of an evaluate_* result, stating n, the reference set and the seed; with a "floor" in the
    result (Evaluator.floor), its figures in a column of their own."""
    lines = [title] if title else []
    lines.append(f"samples: {result['n']} (seed {result['seed']}); reference: {result['reference']}")
    lines.append(f"feature classifier {result['classifier']}: {100 * result['classifier_accuracy']:.2f}% "
                 "held-out accuracy")
    if "inception_fid" in result:
        lines.append(f"Inception FID ({result['inception_backend']}): {result['inception_fid']:.3f}  "
                     "(for comparison with published tables; not suited to 28x28 digits)")
    floor = result.get("floor")
    rows = ROWS + (STACKED_ROWS if "modes" in result else [])
    width = max(len(label) for _, label, _, _ in rows)
    lines.append("")
    if floor:
        lines.append(f"{'':<{width}}  {'generated':<24} {'real vs real':<14} better")
    for key, label, fmt, better in rows:
        column = f"{_floor_value(floor, key, fmt):<14} " if floor else ""
        lines.append(f"{label:<{width}}  {_value(result, key, fmt):<24} {column}{better}")
    lines.append(f"{'class shares':<{width}}  {_shares(result, result['class_histogram'])}")
    if "label_accuracy" in result:  # a conditional model: is a requested class read as that class?
        per_class = _shares(result, result["label_accuracy_per_class"])
        lines.append(f"{'requested class read':<{width}}  {100 * result['label_accuracy']:.2f}%  ({per_class})")
    if floor:
        lines.append(f"real vs real: {floor['description']}")
    return "\n".join(lines)


def _floor_value(floor: dict, key: str, fmt: str) -> str:
    if key == "memorization":
        return "1 (by def.)"  # the ratio's denominator is the real images' own distance
    if key == "kid":
        return fmt.format(floor["kid"])
    return _value(floor, key, fmt)


def _shares(result: dict, values: list) -> str:
    """'name:share' for every class (the 1,000 modes of Stacked MNIST: only the ten commonest)."""
    names = result.get("class_names") or [str(c) for c in range(len(values))]
    pairs = list(zip(names, values, strict=False))
    if len(pairs) > 26:
        pairs = sorted(pairs, key=lambda pair: -pair[1])[:10]
    return "  ".join(f"{name}:{100 * value:.1f}%" for name, value in pairs)
