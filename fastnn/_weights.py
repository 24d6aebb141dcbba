"""class_weight: per-class weights turned into per-sample weights.

scikit-learn's semantics (sklearn.utils.class_weight, LogisticRegression),
in NumPy alone so that fastnn.Network needs no scikit-learn:

- None: no class weights.
- a dict {class: weight}: classes left out weigh 1; weights finite, >= 0.
- "balanced": class c weighs sum(sw) / (n_classes * sum of sw over the
  samples of class c) -- n_samples / (n_classes * count_c) without sample
  weights -- over the classes present (LogisticRegression's form, the
  sample weights counted).
- multilabel targets (several independent 0/1 outputs): "balanced" (each
  output balanced on its own) or a list of one dict per output, keyed by
  0 and 1; a sample's weight is the product over the outputs of its
  class's weight in each (compute_sample_weight's multi-output rule).

The result multiplies the sample weights: sample_weight * class weight of
each sample's class.
"""
import numbers

import numpy as np

__all__ = ["class_sample_weight"]

_KINDS = ("binary", "multiclass", "multilabel")


def _check_weight_dict(d, classes, what):
    """Weights of `classes` (a list of labels) from dict d, checked: keys
    among the classes, values finite reals >= 0; absent classes weigh 1."""
    known = set(classes)
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ValueError(f"{what} names labels that are not classes: "
                         f"{sorted(map(repr, unknown))}; the classes are {classes}")
    out = np.ones(len(classes))
    for j, c in enumerate(classes):
        if c not in d:
            continue
        v = d[c]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) \
                or not np.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"{what}[{c!r}] must be a finite real number >= 0, "
                             f"got {v!r}")
        out[j] = float(v)
    return out


def _balanced(index, n_classes, sw):
    """Per-class weights sum(sw) / (n_present * weighted count_c) over the
    classes present (index: each sample's class in [0, n_classes))."""
    w = np.ones(len(index)) if sw is None else sw
    counts = np.bincount(index, weights=w, minlength=n_classes)
    present = counts > 0
    out = np.ones(n_classes)
    out[present] = counts.sum() / (present.sum() * counts[present])
    return out


def class_sample_weight(class_weight, Y, kind, classes=None, sample_weight=None,
                        what="class_weight"):
    """Per-sample weights from class_weight, multiplied into sample_weight.

    Y: (n, n_out) 0/1 targets: for kind 'binary' one column (class 1 where
    1), for 'multiclass' one-hot rows, for 'multilabel' one 0/1 column per
    output.  classes: the labels a dict's keys name (binary: 2 labels,
    multiclass: one per column); default 0, 1 (binary, multilabel) or the
    column indices (multiclass).  sample_weight: (n,) or None.  Returns a
    float64 (n,) array, or sample_weight itself if class_weight is None.
    ValueError names any bad value, before anything is computed from it.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if class_weight is None:
        return sample_weight
    Y = np.asarray(Y)
    n, n_out = Y.shape
    sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    if kind == "multilabel":
        return _multilabel(class_weight, Y, sw, what)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"{what} must be None, 'balanced' or a dict "
                             f"{{class: weight}}, got {class_weight!r}")
    elif not isinstance(class_weight, dict):
        raise ValueError(f"{what} must be None, 'balanced' or a dict "
                         f"{{class: weight}}, got {type(class_weight).__name__}")
    if kind == "binary":
        index = (Y[:, 0] > 0.5).astype(np.intp)
        n_classes = 2
        default = [0, 1]
    else:
        index = np.argmax(Y, axis=1)
        n_classes = n_out
        default = list(range(n_out))
    labels = default if classes is None else list(np.asarray(classes).tolist())
    if len(labels) != n_classes:
        raise ValueError(f"{n_classes} classes expected, got {len(labels)} labels")
    if class_weight == "balanced":
        per_class = _balanced(index, n_classes, sw)
    else:
        per_class = _check_weight_dict(class_weight, labels, what)
    w = per_class[index]
    return _combine(w, sw, what)


def _multilabel(class_weight, Y, sw, what):
    n, n_out = Y.shape
    if isinstance(class_weight, str) and class_weight == "balanced":
        dicts = None
    elif isinstance(class_weight, (list, tuple)):
        if len(class_weight) != n_out:
            raise ValueError(f"{what}: multilabel targets with {n_out} outputs need "
                             f"one dict per output, got {len(class_weight)}")
        for k, d in enumerate(class_weight):
            if not isinstance(d, dict):
                raise ValueError(f"{what}[{k}] must be a dict {{0: weight, 1: "
                                 f"weight}}, got {d!r}")
        dicts = class_weight
    else:
        raise ValueError(f"{what}: for multilabel targets (several 0/1 outputs) it "
                         "must be 'balanced' or a list of one dict {0: weight, 1: "
                         f"weight}} per output, got {class_weight!r}")
    w = np.ones(n)
    for k in range(n_out):
        index = (Y[:, k] > 0.5).astype(np.intp)
        if dicts is None:
            per_class = _balanced(index, 2, sw)
        else:
            per_class = _check_weight_dict(dicts[k], [0, 1], f"{what}[{k}]")
        w *= per_class[index]
    return _combine(w, sw, what)


def _combine(w, sw, what):
    out = w if sw is None else sw * w
    if not out.sum() > 0:
        raise ValueError(f"{what} (times sample_weight) gives every sample weight 0: "
                         "no sample would count")
    return out
