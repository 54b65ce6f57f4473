#!/usr/bin/env python3
"""Reference DeepSORT run for the tracker's test: deep-sort-realtime 1.3.2's own `DeepSort`
tracker fed given detections and embeddings (no embedder, no frames).

    deepsort_ref.py IN.json OUT.json

IN: {"config": {max_iou_distance, max_age, n_init, max_cosine_distance, nn_budget,
     gating_only_position}, "frames": [[{"ltwh": [l, t, w, h], "confidence": c,
     "feature": [...]}, ...], ...]}
OUT: {"frames": [[{"track_id": int, "confirmed": bool}, ...], ...]}: for every detection of
every frame, the track that holds it after that frame's update (matched or new).

`deepsort_tracker` imports cv2 at module level but uses it only to crop frames for its
own embedder; with embeddings given it is never called, so a stand-in module that fails
loudly if touched replaces OpenCV (not installed: 60 MB for nothing).
"""
import json
import sys
import types


def _no_cv2(name):
    def fail(*_a, **_k):
        raise RuntimeError(f"cv2.{name} called: the reference must not need OpenCV")
    return fail


class _Cv2(types.ModuleType):
    def __getattr__(self, name):
        return _no_cv2(name)


sys.modules.setdefault("cv2", _Cv2("cv2"))

from deep_sort_realtime.deepsort_tracker import DeepSort  # noqa: E402


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    c = spec["config"]
    tracker = DeepSort(
        max_iou_distance=c["max_iou_distance"],
        max_age=c["max_age"],
        n_init=c["n_init"],
        max_cosine_distance=c["max_cosine_distance"],
        nn_budget=c["nn_budget"],
        gating_only_position=c["gating_only_position"],
        embedder=None,
    )
    out = []
    for dets in spec["frames"]:
        raw = [(d["ltwh"], d["confidence"], "object") for d in dets]
        embeds = [d["feature"] for d in dets]
        tracks = tracker.update_tracks(raw, embeds=embeds, others=list(range(len(dets))))
        row = [None] * len(dets)
        for t in tracks:
            if t.time_since_update == 0:
                row[t.others] = {"track_id": int(t.track_id), "confirmed": bool(t.is_confirmed())}
        if any(r is None for r in row):
            raise SystemExit(f"frame {len(out)}: a detection has no track: {row}")
        out.append(row)
    with open(sys.argv[2], "w") as f:
        json.dump({"frames": out}, f)


if __name__ == "__main__":
    main()
