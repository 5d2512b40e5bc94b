"""The data sets of ``gradstep compare``: built-in ones, a synthetic sample, CSV and LIBSVM files.

Every source comes out the same way: X float64 (n, d) standardized column by column
(StandardScaler: zero mean, unit variance; a constant column stays 0), y float64 of 0/1, and the
names of the two classes (``classes[1]`` is the positive class, label 1). Sparse sources (LIBSVM
files, scipy.sparse ``.npz`` files) stay a CSR matrix, scaled to unit variance without centering
(centering would make every entry nonzero).

A user's mistake (a missing file, a malformed spec, a label column with three classes) raises
``DataError`` with a one-line message that names the fix; the command line turns it into an exit
with code 2.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the ``--data`` names that are not files
BUILTIN = ("breast_cancer", "digits")
SVMLIGHT_EXTENSIONS = (".svm", ".libsvm", ".svmlight")
CSV_EXTENSIONS = (".csv", ".tsv")
SYNTHETIC_DEFAULTS = {"n": 1000, "d": 20}
#: the largest dense synthetic sample, in bytes of float64
MAX_DENSE_BYTES = 4 * 2**30

DATA_HELP = (
    "breast_cancer (default: scikit-learn's 569 x 30 breast-cancer data), "
    "digits (scikit-learn's 8x8 digits made binary: 0-4 -> class 0, 5-9 -> class 1), "
    "synthetic:n=1000,d=20 (a seeded logistic sample: Gaussian X, labels drawn from "
    "sigmoid(X w + b); --seed sets it), a CSV file whose last column is the label (a header "
    "row is detected), a LIBSVM/svmlight file (.svm, .libsvm, .svmlight; other "
    "extensions such as .txt are recognised by their 'index:value' content), or a .npz file "
    "saved by scipy.sparse.save_npz whose last column is the label. LIBSVM and .npz data "
    "stay sparse (CSR). Features are always scaled to unit variance (dense data also centered)"
)


class DataError(ValueError):
    """The data named by the user cannot be loaded; the message says why and how to fix it."""


@dataclass(frozen=True)
class Dataset:
    X: Any  # (n, d) float64: an ndarray, standardized, or a CSR matrix scaled (not centered)
    y: np.ndarray  # (n,) float64 of 0/1
    name: str  # what the user asked for, e.g. "breast_cancer" or "data.csv"
    description: str  # one line for the report, e.g. "569 samples x 30 features"
    classes: tuple  # the original labels: classes[0] -> 0, classes[1] -> 1

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def load(spec: str, seed: int = 0) -> Dataset:
    """The data set named by ``spec`` (see ``DATA_HELP``), standardized, labels 0/1."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("--data is empty; give breast_cancer, digits, synthetic:n=...,d=... "
                        "or a CSV/LIBSVM file")
    spec = spec.strip()
    if spec == "breast_cancer":
        X, labels, desc = _breast_cancer()
    elif spec == "digits":
        X, labels, desc = _digits()
    elif spec.startswith("synthetic") and not os.path.exists(spec):
        X, labels, desc = _synthetic(spec, seed)
    elif os.path.isdir(spec):
        raise DataError(f"--data {spec!r} is a directory; give a CSV or LIBSVM file")
    elif not os.path.exists(spec):
        raise DataError(
            f"--data {spec!r}: no such file, and not one of {', '.join(BUILTIN)} "
            "or synthetic:n=...,d=..."
        )
    elif spec.lower().endswith(".npz"):
        X, labels, desc = _npz(spec)
    elif _is_svmlight(spec):
        X, labels, desc = _svmlight(spec)
    else:
        X, labels, desc = _csv(spec)
    y, classes = _binary_labels(labels, spec)
    return Dataset(_standardize(X), y, spec, desc, classes)


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return X, y, f"{X.shape[0]} samples x {X.shape[1]} features (malignant=0, benign=1)"


def _digits():
    from sklearn.datasets import load_digits

    X, digit = load_digits(return_X_y=True)
    return X, (digit >= 5).astype(np.float64), (
        f"{X.shape[0]} samples x {X.shape[1]} pixels, digits 0-4 = class 0, 5-9 = class 1"
    )


def parse_synthetic(spec: str) -> dict:
    """{"n": int, "d": int} from "synthetic", "synthetic:n=500" or "synthetic:n=500,d=5"."""
    usage = "expected synthetic:n=<samples>,d=<features>, e.g. synthetic:n=1000,d=20"
    body = spec[len("synthetic"):]
    out = dict(SYNTHETIC_DEFAULTS)
    if not body:
        return out
    if not body.startswith(":"):
        raise DataError(f"malformed synthetic spec {spec!r}; {usage}")
    for item in body[1:].split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in out:
            raise DataError(f"malformed synthetic spec {spec!r} (at {item!r}); {usage}")
        try:
            number = int(value.strip())
        except ValueError:
            number = 0
        if number < 1:
            raise DataError(
                f"malformed synthetic spec {spec!r}: {key} must be a positive integer, "
                f"got {value.strip()!r}; {usage}"
            )
        out[key] = number
    if out["n"] < 2:
        raise DataError(f"synthetic spec {spec!r}: n must be at least 2 to hold both classes")
    if out["n"] * out["d"] * 8 > MAX_DENSE_BYTES:
        raise DataError(f"synthetic spec {spec!r}: n*d is too large for this demo "
                        f"(more than {MAX_DENSE_BYTES // 2**30} GiB)")
    return out


def _synthetic(spec: str, seed: int):
    """Gaussian features, true weights of norm 3, labels drawn from the logistic model: the
    classes overlap, as real data does (a Bayes error of roughly 10%)."""
    size = parse_synthetic(spec)
    n, d = size["n"], size["d"]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    w *= 3.0 / np.linalg.norm(w)
    b = 0.5 * rng.standard_normal()
    z = X @ w + b
    y = (rng.random(n) < sigmoid(z)).astype(np.float64)
    if y.min() == y.max():  # tiny n: make sure both classes are there
        y[np.argmin(z)], y[np.argmax(z)] = 0.0, 1.0
    return X, y, f"{n} samples x {d} features, logistic model, seed {seed}"


def _is_svmlight(path: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    if ext in SVMLIGHT_EXTENSIONS:
        return True
    if ext in CSV_EXTENSIONS:
        return False
    # other extensions (.txt, .dat, none): a LIBSVM line is "label index:value index:value ..."
    for line in _first_lines(path, 20):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        return len(tokens) >= 2 and all(":" in t for t in tokens[1:])
    return False


def _first_lines(path: str, count: int) -> list:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line for _, line in zip(range(count), fh)]
    except OSError as exc:
        raise DataError(f"--data {path!r}: cannot read the file ({exc.strerror or exc})") from None


def _svmlight(path: str):
    from sklearn.datasets import load_svmlight_file

    try:
        Xs, y = load_svmlight_file(path)
    except OSError as exc:
        raise DataError(f"--data {path!r}: cannot read the file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DataError(f"--data {path!r} is not a valid LIBSVM/svmlight file: {one_line(exc)}") \
            from None
    n, d = Xs.shape
    if n == 0 or d == 0:
        raise DataError(f"--data {path!r}: the LIBSVM file holds no samples or no features")
    return Xs.tocsr(), y, f"{n} samples x {d} features (LIBSVM, sparse, {Xs.nnz} nonzeros)"


def _npz(path: str):
    """A scipy.sparse.save_npz file: the features and, in the last column, the label."""
    import scipy.sparse

    try:
        M = scipy.sparse.load_npz(path)
    except OSError as exc:
        raise DataError(f"--data {path!r}: cannot read the file ({exc.strerror or exc})") from None
    except (ValueError, KeyError) as exc:
        raise DataError(f"--data {path!r} is not a file saved by scipy.sparse.save_npz "
                        f"({one_line(exc)}); save the matrix [X | y] with save_npz") from None
    n, columns = M.shape
    if n == 0 or columns < 2:
        raise DataError(f"--data {path!r}: the matrix is {n} x {columns}; it needs at least one "
                        "feature column and the label column (last)")
    M = M.tocsc()
    y = M[:, columns - 1].toarray().ravel()
    X = M[:, : columns - 1].tocsr()
    return X, y, f"{n} samples x {columns - 1} features (.npz, sparse, {X.nnz} nonzeros)"


def _csv(path: str):
    lines = _first_lines(path, 50)
    sample = "".join(lines)
    if not sample.strip():
        raise DataError(f"--data {path!r}: the file is empty")
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t |")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = []
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
            for row in reader:
                if delimiter == " ":
                    row = [c for c in row if c != ""]
                if row and any(c.strip() for c in row):
                    rows.append([c.strip() for c in row])
    except OSError as exc:
        raise DataError(f"--data {path!r}: cannot read the file ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise DataError(f"--data {path!r}: not a readable CSV file ({one_line(exc)})") from None
    header = rows and not all(_is_number(c) for c in rows[0][:-1])
    if header:
        rows = rows[1:]
    if not rows:
        raise DataError(f"--data {path!r}: the CSV file has no data rows")
    width = len(rows[0])
    if width < 2:
        raise DataError(
            f"--data {path!r}: a CSV row needs at least two columns (features, then the label); "
            f"found one column (delimiter {delimiter!r})"
        )
    first_line = 2 if header else 1
    X = np.empty((len(rows), width - 1))
    cells = []
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"--data {path!r}: data row {i + first_line} has {len(row)} columns, "
                f"the first has {width}"
            )
        for j, cell in enumerate(row[:-1]):
            value = _to_float(cell)
            if value is None:
                raise DataError(
                    f"--data {path!r}: data row {i + first_line}, column {j + 1} is {cell!r}, "
                    "not a finite number; features must be numeric and complete"
                )
            X[i, j] = value
        cells.append(row[-1])
    missing = [i + first_line for i, c in enumerate(cells) if _missing_label(c)]
    if missing:
        raise DataError(
            f"--data {path!r}: the label (last column) is empty or not a finite number in data "
            f"row(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; drop those rows first"
        )
    numeric = [_to_float(c) for c in cells]
    if all(v is not None for v in numeric):
        labels = np.array(numeric, dtype=np.float64)
    else:
        labels = np.array(cells, dtype=object)
    name = "header row skipped" if header else "no header"
    return X, labels, f"{X.shape[0]} samples x {X.shape[1]} features (CSV, {name})"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _binary_labels(labels, spec: str):
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        rows = np.flatnonzero(~np.isfinite(labels))[:5].tolist()
        raise DataError(
            f"--data {spec!r}: the label (last column) is missing or not finite in rows {rows}"
            f"{' ...' if (~np.isfinite(labels)).sum() > 5 else ''}; drop those rows first"
        )
    classes = np.unique(labels)
    if classes.size != 2:
        shown = ", ".join(str(c) for c in classes[:5]) + (", ..." if classes.size > 5 else "")
        raise DataError(
            f"--data {spec!r}: the label (last column) has {classes.size} distinct values "
            f"({shown}); compare fits binary logistic regression and needs exactly two"
        )
    y = (labels == classes[1]).astype(np.float64)
    return y, (classes[0].item() if hasattr(classes[0], "item") else classes[0],
               classes[1].item() if hasattr(classes[1], "item") else classes[1])


def _standardize(X: Any) -> Any:
    from sklearn.preprocessing import StandardScaler

    if hasattr(X, "tocsr"):  # sparse: unit variance, no centering (it would densify)
        X = X.tocsr().astype(np.float64)
        if not np.isfinite(X.data).all():
            raise DataError("the features contain NaN or infinity; remove or impute them first")
        X.sum_duplicates()
        X.sort_indices()
        too_large = np.flatnonzero(abs(X).max(axis=0).toarray().ravel() > 1e150)
        _refuse_too_large(too_large)
        return StandardScaler(with_mean=False).fit_transform(X).tocsr()
    X = np.asarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise DataError("the features contain NaN or infinity; remove or impute them first")
    _refuse_too_large(np.flatnonzero(np.abs(X).max(axis=0) > 1e150))
    return np.ascontiguousarray(StandardScaler().fit_transform(X))


def _refuse_too_large(too_large: np.ndarray) -> None:
    """A column whose squares overflow (entries past ~1e154) cannot be standardized."""
    if too_large.size:
        raise DataError(
            f"feature column(s) {too_large[:5].tolist()} hold values above 1e150, too large to "
            "standardize (their squares overflow); rescale them (e.g. take logs) first"
        )


def _missing_label(cell: str) -> bool:
    """An empty label, or one that reads as NaN or infinity ("nan", "NaN", "inf")."""
    text = cell.strip()
    if not text:
        return True
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False  # a text label such as "spam"


def _is_number(text: str) -> bool:
    return _to_float(text) is not None


def _to_float(text: str):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (the command line reports errors on one line)."""
    return " ".join(str(exc).split())


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function as a user writes it in NumPy: the synthetic sample and the NumPy
    baselines of ``gradstep bench`` share it (for |z| < 700; no overflow guard)."""
    return 1.0 / (1.0 + np.exp(-z))
