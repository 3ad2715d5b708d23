"""Leakage guard: exact and near-duplicate images within a folder, across its splits, and between
the training folder and an external test folder.

Works on the decoded, resized arrays `data.load_arrays` caches (float16 in [0, 1]):
- exact: same sha1 of those pixels (so also the same image stored twice under other names or
  formats);
- near: either signature below at or above its threshold, both computed at 64 x 64 and
  compared against the image and its left-right mirror:
  * thumbnail: z-scored 16 x 16 block means, cosine >= THUMB_MIN_SIM. Catches brightness,
    contrast, gamma-like and noise changes and flips.
  * spectrum: log |FFT| of the Hann-windowed image in the ring 2..16 cycles, z-scored, cosine
    >= SPECTRUM_MIN_SIM. The magnitude spectrum ignores translation: catches shifted copies.
    A spectrum match counts only when the two images, aligned by phase correlation, correlate
    >= ALIGNED_MIN_CORR over their overlap (look-alike textures have similar spectra too).

Thresholds, measured on the 5,190 real chest X-rays (64 px): the most similar image of ANOTHER
patient reaches at most 0.984 (thumbnail) and 0.907 (spectrum); copies reach >= 0.995 for x1.2
brightness, 0.8 contrast, noise sigma 0.02 and flips (thumbnail) and >= 0.944 for shifts up to
3 px of 64 (spectrum). Rotations beyond ~2 degrees and zooms are not caught. A perceptual hash
(imagehash phash, 64 bits) was tried first and does not separate chest films: other patients'
images sit at Hamming distance 2-6, shifted copies of one image at 12-22.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from edgexray.runtime.preprocess import resize_square

SIDE = 64
THUMB = 16
THUMB_MIN_SIM = 0.99
SPECTRUM_BAND = (2.0, 16.0)
SPECTRUM_MIN_SIM = 0.94
ALIGNED_MIN_CORR = 0.95
MAX_SHIFT = SIDE // 8  # larger translations are not taken for copies
LISTED = 20  # clusters listed in full in a report; the counts cover all


def exact_keys(arrays: np.ndarray) -> list[str]:
    """sha1 of each image's decoded pixels."""
    return [hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays]


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    return (v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-8)).astype(np.float32)


def signatures(arrays: np.ndarray) -> dict[str, np.ndarray]:
    """{"thumb": (N, 256), "thumb_flip", "spectrum": (N, D), "spectrum_flip"} unit vectors."""
    n = len(arrays)
    small = np.empty((n, SIDE, SIDE), np.float32)
    for i, a in enumerate(arrays):
        small[i] = resize_square(np.asarray(a, np.float32), SIDE)
    k = SIDE // THUMB
    win = np.outer(np.hanning(SIDE), np.hanning(SIDE)).astype(np.float32)
    fy = np.fft.fftfreq(SIDE) * SIDE
    fx = np.fft.rfftfreq(SIDE) * SIDE
    r = np.hypot(fy[:, None], fx[None, :])
    band = (r >= SPECTRUM_BAND[0]) & (r <= SPECTRUM_BAND[1])
    out = {"small": small}
    for tag, x in (("", small), ("_flip", small[:, :, ::-1])):
        out["thumb" + tag] = _unit(x.reshape(n, THUMB, k, THUMB, k).mean((2, 4)).reshape(n, -1))
        centered = (x - x.mean((1, 2), keepdims=True)) * win
        out["spectrum" + tag] = _unit(np.log1p(np.abs(np.fft.rfft2(centered)))[:, band])
    return out


def aligned_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of a and b (SIDE x SIDE) over their overlap after the translation of b that
    phase correlation finds (0 when it exceeds MAX_SHIFT)."""
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    cross = fa * np.conj(fb)
    peak = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=a.shape)
    dy, dx = np.unravel_index(int(np.argmax(peak)), peak.shape)
    dy, dx = (dy + SIDE // 2) % SIDE - SIDE // 2, (dx + SIDE // 2) % SIDE - SIDE // 2
    if max(abs(dy), abs(dx)) > MAX_SHIFT:
        return 0.0
    b = np.roll(b, (dy, dx), (0, 1))
    m = MAX_SHIFT
    u, v = a[m:-m, m:-m].ravel(), b[m:-m, m:-m].ravel()
    u, v = u - u.mean(), v - v.mean()
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9))


def near_pairs(sig_a: dict, sig_b: dict | None = None, block: int = 1024) -> list[tuple[int, int]]:
    """(i, j) with image i of a and image j of b (of a, i < j, when b is None) near-duplicates."""
    same = sig_b is None
    sig_b = sig_a if same else sig_b
    pairs = []
    n = len(sig_a["thumb"])
    for start in range(0, n, block):
        a = sig_a["thumb"][start : start + block]
        thumb = np.maximum(a @ sig_b["thumb"].T, a @ sig_b["thumb_flip"].T) >= THUMB_MIN_SIM
        a = sig_a["spectrum"][start : start + block]
        direct = a @ sig_b["spectrum"].T >= SPECTRUM_MIN_SIM
        mirror = a @ sig_b["spectrum_flip"].T >= SPECTRUM_MIN_SIM
        for i, j in zip(*np.nonzero(thumb | direct | mirror)):
            i, j = int(i) + start, int(j)
            if same and i >= j:
                continue
            ok = bool(thumb[i - start, j])
            x, y = sig_a["small"][i], sig_b["small"][j]
            if not ok and direct[i - start, j]:
                ok = aligned_corr(x, y) >= ALIGNED_MIN_CORR
            if not ok and mirror[i - start, j]:
                ok = aligned_corr(x, y[:, ::-1]) >= ALIGNED_MIN_CORR
            if ok:
                pairs.append((i, j))
    return pairs


def clusters(n: int, pairs) -> list[list[int]]:
    """Connected components of size > 1 (union-find), each sorted, in order of first member."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    comps: dict[int, list[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    return sorted((c for c in comps.values() if len(c) > 1), key=lambda c: c[0])


def duplicate_clusters(arrays: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """(exact clusters, near clusters) of row indices; near clusters include exact ones."""
    keys = exact_keys(arrays)
    first: dict[str, int] = {}
    exact_pairs = []
    for i, k in enumerate(keys):
        if k in first:
            exact_pairs.append((first[k], i))
        else:
            first[k] = i
    near = near_pairs(signatures(arrays)) if len(arrays) > 1 else []
    return clusters(len(arrays), exact_pairs), clusters(len(arrays), exact_pairs + near)


def folder_report(
    relpaths: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    exact: list[list[int]],
    near: list[list[int]],
    split_of: dict | None = None,
) -> dict:
    """What the guard found in one folder: duplicate counts, clusters with conflicting labels,
    and clusters that span splits (`split_of`: relpath -> split)."""
    labels = np.asarray(labels)

    def describe(c):
        d = {"images": [relpaths[i] for i in c], "labels": sorted({class_names[int(labels[i])] for i in c})}
        if split_of is not None:
            d["splits"] = sorted({split_of[relpaths[i]] for i in c if relpaths[i] in split_of})
        return d

    conflicting = [describe(c) for c in near if len(set(labels[c].tolist())) > 1]
    across = [
        describe(c) for c in near if split_of is not None and len({split_of.get(relpaths[i]) for i in c}) > 1
    ]
    return {
        "method": "exact: sha1 of decoded pixels; near: thumbnail cosine >= "
        f"{THUMB_MIN_SIM} or magnitude-spectrum cosine >= {SPECTRUM_MIN_SIM} at "
        f"{SIDE} px, mirror included (edgexray/leakage.py)",
        "images": len(relpaths),
        "exact_duplicate_clusters": len(exact),
        "images_in_exact_clusters": sum(map(len, exact)),
        "near_duplicate_clusters": len(near),
        "images_in_near_clusters": sum(map(len, near)),
        "conflicting_labels": len(conflicting),
        "conflicting_label_clusters": conflicting[:LISTED],
        "across_splits": len(across),
        "across_split_clusters": across[:LISTED],
        "examples": [describe(c) for c in near[:LISTED]],
    }


def cross_report(arrays_a, relpaths_a, labels_a, arrays_b, relpaths_b, labels_b, class_names) -> dict:
    """Images of folder b (the external test set) that duplicate images of folder a."""
    keys_a = {}
    for i, k in enumerate(exact_keys(arrays_a)):
        keys_a.setdefault(k, i)
    pairs = {(keys_a[k], j) for j, k in enumerate(exact_keys(arrays_b)) if k in keys_a}
    exact_b = {j for _, j in pairs}
    if len(arrays_a) and len(arrays_b):
        pairs |= {(i, j) for j, i in near_pairs(signatures(arrays_b), signatures(arrays_a))}
    matched: dict[int, list[int]] = {}
    for i, j in sorted(pairs):
        matched.setdefault(j, []).append(i)
    rows = [
        {
            "external": relpaths_b[j],
            "matches": [relpaths_a[i] for i in m],
            "exact": j in exact_b,
            "labels_differ": any(labels_a[i] != labels_b[j] for i in m),
            "label": class_names[int(labels_b[j])],
        }
        for j, m in sorted(matched.items())
    ]
    return {
        "external_images": len(relpaths_b),
        "external_images_duplicating_training_folder": len(rows),
        "exact": sum(r["exact"] for r in rows),
        "conflicting_labels": sum(r["labels_differ"] for r in rows),
        "examples": rows[:LISTED],
    }
