"""The model comparison: will the recipient's model still work on the released data?

The same scikit-learn model (a histogram gradient-boosting classifier, fixed seed) is trained
once on the original consented records and once on the released records of the same training
subjects (suppressed subjects are not in the release, so not in that training set), and both
are scored on one held-out part of the original consented records. The released model sees the
held-out records as a recipient would feed them to it: recoded to the released levels.

Time is bounded by sampling: at most `sample` training subjects and a quarter of that held out,
drawn with a fixed seed; the record says how many of how many were used.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from deidflow.utility.measures import as_text, parsed
from deidflow.utility.record import ModelComparison

MAX_CATEGORIES = 250  # HistGradientBoosting's native categorical limit is 255 bins
MIN_SUBJECTS = 50


def _encode(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Features as a float matrix and which columns are categorical (codes by frequency,
    rare categories beyond MAX_CATEGORIES pooled)."""
    cols, cats = [], []
    for name in frame.columns:
        values = frame[name]
        num = parsed(values)
        present = values.notna()
        if present.any() and num[present].notna().all():
            cols.append(num.to_numpy(dtype=float, na_value=np.nan))
            cats.append(False)
            continue
        text = as_text(values)
        freq = text.value_counts()
        keep = freq.index[:MAX_CATEGORIES - 1]
        codes = pd.Categorical(text, categories=keep).codes.astype(float)
        codes[codes < 0] = MAX_CATEGORIES - 1  # pooled rare categories
        cols.append(codes)
        cats.append(True)
    return np.column_stack(cols) if cols else np.zeros((len(frame), 0)), np.array(cats, dtype=bool)


def _fit_score(x: np.ndarray, cats: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
               y_test: np.ndarray) -> tuple[float, float | None]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    model = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.15, early_stopping=False,
                                           random_state=0,
                                           categorical_features=cats if cats.any() else None)
    # One OpenMP thread: on a busy host two threads spin-wait on each other and a fit takes
    # several times longer (benchmarks/bench_utility.py); one thread is also deterministic.
    with threadpool_limits(1):
        model.fit(x[train], y[train])
        proba = model.predict_proba(x[test])
    pred = model.classes_[np.argmax(proba, axis=1)]
    accuracy = float(accuracy_score(y_test, pred))
    auc: float | None
    try:
        if len(model.classes_) == 2:
            auc = float(roc_auc_score(y_test == model.classes_[1], proba[:, 1]))
        else:
            auc = float(roc_auc_score(y_test, proba, multi_class="ovr", average="macro",
                                      labels=model.classes_))
    except ValueError:  # a class of the held-out part the model never saw, or only one class
        auc = None
    return accuracy, auc


def compare_models(original: pd.DataFrame, released_view: pd.DataFrame, target: str,
                   released: np.ndarray, *, sample: int, seed: int = 0) -> ModelComparison | None:
    """Train on the original and on the released representation of the same subjects; score
    both on the same held-out original subjects. `original` and `released_view` hold one row
    per consented subject (the features and the target); `released` marks who was released.
    Returns None when there are too few subjects or classes to say anything."""
    started = time.perf_counter()
    n = len(original)
    y_orig = as_text(original[target]).to_numpy(dtype=object)
    y_rel = as_text(released_view[target]).to_numpy(dtype=object)
    if n < MIN_SUBJECTS or len(np.unique(y_orig)) < 2:
        return None
    features = [c for c in original.columns if c != target]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = min(max(n // 5, 1), max(sample // 4, 1))
    test = np.sort(order[:n_test])
    train = np.sort(order[n_test:n_test + sample])
    train_rel = train[released[train]]
    if len(train_rel) < 2 or len(np.unique(y_rel[train_rel])) < 2:
        return None
    # Only the sampled subjects are encoded: positions 0..len(train)-1 train, then the test.
    rows = np.concatenate([train, test])
    at_train = np.arange(len(train))
    at_test = np.arange(len(train), len(rows))
    at_train_rel = at_train[released[train]]
    x_o, c_o = _encode(original[features].iloc[rows])
    x_r, c_r = _encode(released_view[features].iloc[rows])
    acc_o, auc_o = _fit_score(x_o, c_o, y_orig[rows], at_train, at_test, y_orig[test])
    acc_r, auc_r = _fit_score(x_r, c_r, y_rel[rows], at_train_rel, at_test, y_rel[test])
    return ModelComparison(
        target=target, model="HistGradientBoostingClassifier (scikit-learn, 60 iterations, seed 0)",
        features=features, classes=int(len(np.unique(y_orig))), population=n,
        train_original=int(len(train)), train_released=int(len(train_rel)), test=int(len(test)),
        sampled=n_test + len(train) < n, accuracy_original=acc_o, accuracy_released=acc_r,
        accuracy_difference=acc_r - acc_o, auc_original=auc_o, auc_released=auc_r,
        auc_difference=None if auc_o is None or auc_r is None else auc_r - auc_o,
        seconds=time.perf_counter() - started,
    )
