"""One source's drift monitor: scenes, image checks with persistence rules, and a test martingale on the scores.

Video frames are not independent (a product held 10 s is 300 near copies), so nothing here tests frames one by one.
Frames are grouped into *scenes*: a scene starts when the thumbnail moves away from the scene's first frame by more
than ``scene_change`` grey levels on average (sensor noise moves it by about 1), or when a statistic jumps (a lens
going out of focus), at most once per ``min_scene`` frames. Each scene contributes one observation — its first
frame's statistics and scores — and the tests treat scenes, not frames, as the exchangeable units.

Kinds:

- ``dark`` / ``bright`` / ``blur``: the scene's white level / brightness / sharpness lies beyond the reference's
  ``tail`` quantile (rank ``r = floor(tail (n+1))`` of ``n`` calibration images, so each scene is beyond with
  probability ``r/(n+1)`` while scenes look like calibration images) on ``scenes`` scenes in a row. A false alarm in
  ``H`` scenes has probability at most ``H · r(r+1)(r+2)/((n+1)(n+2)(n+3))`` per kind for 3 scenes in a row (a union
  bound over where the run starts). It lasts while the newest scene stays beyond.
- ``covered``: brightness and contrast both below half the calibration images' smallest, on every frame for
  ``covered_frames`` frames (a lens cap, a hand, a dead sensor): nothing in calibration looked like it.
- ``frozen``: ``frozen_frames`` consecutive bit-identical frames (a live sensor is never bit-identical twice).
- ``scores``: a conformal test martingale (:mod:`.martingale`) on the scenes' OOD scores (or ``1 - max
  probability`` when the model carries no OOD threshold) reaches ``1/alpha``: at most ``alpha`` chance of ever firing
  while scenes are exchangeable with the calibration images. It then restarts and lasts until the restarted
  martingale falls below ``clear_below`` (the evidence since the alarm is gone).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np

from edgecls.core.errors import InputError
from edgecls.runtime.drift.image_checks import STATS, thumbnail_stats
from edgecls.runtime.drift.martingale import ConformalMartingale
from edgecls.runtime.drift.reference import DriftReference

KINDS: Tuple[str, ...] = ("covered", "frozen", "dark", "bright", "blur", "scores")
# tail kinds: (statistic, direction: -1 low tail, +1 high tail)
TAILS: Dict[str, Tuple[str, int]] = {"dark": ("white", -1), "bright": ("brightness", 1), "blur": ("sharpness", -1)}
_I = {s: i for i, s in enumerate(STATS)}
_JUMPS = {"brightness": 25.0, "white": 25.0, "sharpness": 0.8}  # a statistic moving this much starts a scene


@dataclass(frozen=True)
class DriftConfig:
    """How the monitor decides (defaults measured by bench/bench_drift.py on 30 fps streams)."""

    alpha: float = 0.02  # scores martingale: P(ever a false alarm) <= alpha
    tail: float = 0.03  # image checks: the reference quantile a scene must lie beyond
    scenes: int = 3  # image checks: ... on this many scenes in a row
    scene_change: float = 6.0  # mean |grey difference| (0..255) to the scene's first frame that starts a new scene
    min_scene: int = 10  # frames: scenes start at most this often
    restat: int = 8  # frames: full statistics of a held scene every this many frames (covered, a focus change)
    covered_frames: int = 15
    frozen_frames: int = 60
    jump: float = 0.02
    clear_below: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"drift alpha must be in (0, 1), got {self.alpha!r}")
        if not 0.0 < self.tail < 0.5:
            raise InputError(f"drift tail must be in (0, 0.5), got {self.tail!r}")
        for name in ("scenes", "min_scene", "restat", "covered_frames", "frozen_frames"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"drift {name} must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Thresholds:
    """What one reference means for the checks (shared by every source's monitor)."""

    tails: Dict[str, float]  # kind -> threshold on its statistic
    tail_level: float  # r/(n+1): chance one calibration-like scene lies beyond a tail threshold
    covered_brightness: float
    covered_contrast: float
    score_name: str  # "ood_score" or "max_prob"
    score_values: Tuple[float, ...]  # larger = less like calibration

    @classmethod
    def from_reference(cls, ref: DriftReference, cfg: DriftConfig) -> Thresholds:
        n = ref.n
        r = max(1, int(cfg.tail * (n + 1)))
        tails = {}
        for kind, (stat, side) in TAILS.items():
            v = np.sort(ref.stat(stat))
            tails[kind] = float(v[r - 1]) if side < 0 else float(v[n - r])
        ood = ref.score("ood_score")
        if ood is not None:
            name, vals = "ood_score", ood
        else:
            mp = ref.score("max_prob")
            if mp is None:
                raise InputError("drift reference has neither ood_score nor max_prob scores")
            name, vals = "max_prob", 1.0 - mp
        return cls(tails, r / (n + 1), 0.5 * float(ref.stat("brightness").min()),
                   0.5 * float(ref.stat("contrast").min()), name, tuple(float(x) for x in vals))

    def false_alarm_bound(self, n: int, scenes_in_a_row: int, scenes: int) -> float:
        """Union bound on a tail kind's false alarm over ``scenes`` scenes (reference of ``n`` images)."""
        r = round(self.tail_level * (n + 1))
        b = 1.0
        for i in range(scenes_in_a_row):
            b *= (r + i) / (n + 1 + i)
        return min(1.0, scenes * b)


def scene_score(pred: Any, name: str) -> Optional[float]:
    """The value the scores test ranks for one prediction (larger = less like calibration)."""
    if name == "ood_score":
        return None if getattr(pred, "ood_score", None) is None else float(pred.ood_score)
    return 1.0 - float(pred.confidence)


class SourceMonitor:
    """Feed it each frame's grey thumbnail and prediction, in order; it returns the kinds active after that frame."""

    def __init__(self, th: Thresholds, cfg: DriftConfig, seed: int = 0) -> None:
        self.th = th
        self.cfg = cfg
        self.martingale = ConformalMartingale(th.score_values, cfg.alpha, cfg.jump, seed=seed)
        self.frames = 0
        self.scenes = 0
        self.prev: Optional[np.ndarray] = None
        self.first: Optional[np.ndarray] = None
        self.first_stats: Optional[np.ndarray] = None
        self.scene_start = 0
        self.last_stats = -10**9
        self.same_run = 0
        self.covered_since: Optional[int] = None
        self.beyond: Dict[str, Deque[bool]] = {k: deque(maxlen=cfg.scenes) for k in TAILS}
        self.active: Dict[str, bool] = {k: False for k in KINDS}

    @property
    def statistic(self) -> float:
        """The scores martingale's value (alarm at ``1/alpha``)."""
        return self.martingale.value

    def _new_scene(self, g: np.ndarray, stats: np.ndarray, pred: Any) -> None:
        self.first, self.first_stats, self.scene_start = g, stats, self.frames
        self.scenes += 1
        for kind, (stat, side) in TAILS.items():
            v = stats[_I[stat]]
            t = self.th.tails[kind]
            self.beyond[kind].append(bool(v < t if side < 0 else v > t))
            q = self.beyond[kind]
            self.active[kind] = len(q) == q.maxlen and all(q) if not self.active[kind] else q[-1]
        s = scene_score(pred, self.th.score_name)
        if s is not None:
            m = self.martingale.update(s)
            if m >= self.martingale.threshold:
                self.active["scores"] = True
                self.martingale.restart()
            elif self.active["scores"] and m < self.cfg.clear_below:
                self.active["scores"] = False

    def observe(self, g: np.ndarray, pred: Any) -> Tuple[str, ...]:
        cfg = self.cfg
        self.frames += 1
        if self.prev is not None and g.shape == self.prev.shape and np.array_equal(g, self.prev):
            self.same_run += 1
        else:
            self.same_run = 0
        self.prev = g
        self.active["frozen"] = self.same_run + 1 >= cfg.frozen_frames
        held = self.first is not None and self.frames - self.scene_start < cfg.min_scene
        new = self.first is None or (not held and g.shape == self.first.shape
                                     and float(np.mean(np.abs(g - self.first))) > cfg.scene_change)
        if self.first is not None and g.shape != self.first.shape:
            new = True
        stats = None
        if new or self.frames - self.last_stats >= cfg.restat:
            stats = thumbnail_stats(g)
            self.last_stats = self.frames
            if not new and not held and self.first_stats is not None:
                new = any(abs(stats[_I[s]] - self.first_stats[_I[s]]) > d for s, d in _JUMPS.items())
            covered = bool(stats[_I["brightness"]] < self.th.covered_brightness
                           and stats[_I["contrast"]] < self.th.covered_contrast)
            if not covered:
                self.covered_since = None
            elif self.covered_since is None:
                self.covered_since = self.frames
        self.active["covered"] = self.covered_since is not None and \
            self.frames - self.covered_since + 1 >= cfg.covered_frames
        if new and stats is not None and not self.active["frozen"]:
            self._new_scene(g, stats, pred)
        return tuple(k for k in KINDS if self.active[k])
