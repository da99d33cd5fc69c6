"""Benchmark of the review window (offscreen Qt): rendering, scrolling, time to the first slice and
main-thread stalls during a real analysis.

Research software, NOT for diagnostic use.

    python bench/bench_gui.py --out bench/results/gui.json [--case LIDC-IDRI-0002] [--threads 2]

One process, one window, one case (LIDC-IDRI-0002 by default: 261 slices of 512 x 512):

1. *first slice*: from ``open_case`` to the axial view painted with the CT (the CT is read in a
   worker and shown before the analysis starts): the first open of the session, made while
   the warm-up runs (imports of the DICOM readers included, the GIL shared with the warm-up's
   imports); the open that starts the analysis, after the warm-up; a third open of the same
   case, which loads the saved result.
2. *stall*: a heartbeat QTimer fires every 10 ms on the GUI thread from the first open to the
   analysis result on screen (CT load, ``analyze_case``, overlays all run in workers); the
   worst gap between two beats minus the 10 ms period is the worst stall.  The window's
   warm-up (``MainWindow.warm_up``: the analysis imports and the models, in a worker, when the
   window opens) runs first and its own stalls are reported apart (``warm_up``): imports hold
   the GIL for up to ~0.7 s at a time.
3. *render*: with every overlay on (boxes with ids, mask outlines, heatmap) and the top finding
   selected, the axial view at the finding's slice is repainted N times (``QWidget.repaint``:
   numpy compose + QImage + QPainter boxes, crosshair and text; the view's picture cache is
   cleared before each); median and p95 ms.  The compose step alone and a repaint from the
   cached picture (what the two other views do while the axial slice scrolls) are reported too.
4. *scroll*: the axial slice steps through the whole series, each step repainting all three
   views as the window does (the other two views redraw their crosshair); frames per second.
   Also the axial view alone.

Targets (issue 22): render <= 20 ms median, first slice <= 1 s, worst stall <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# a settings store of its own: the benchmark neither reads nor changes the user's
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="lungfuse-bench-gui-")

REPO = Path(__file__).resolve().parent.parent


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(int(round(q * (len(s) - 1))), len(s) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/gui.json")
    ap.add_argument("--case", default="LIDC-IDRI-0002")
    ap.add_argument("--lidc-root", type=Path, default=REPO.parent / "shared/data/lidc-idri")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the analysis (the machine has 2 cores)")
    ap.add_argument("--renders", type=int, default=200)
    args = ap.parse_args()

    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from lungfuse.app.gui.main_window import MainWindow
    from lungfuse.pipelines.analysis.case import AnalysisSettings

    settings = AnalysisSettings(device="cpu", threads=args.threads)
    win = MainWindow(settings=settings, confirm_close=False)
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
    ct = args.lidc_root / args.case
    if not ct.exists():
        raise SystemExit(f"bench_gui: {ct}: no such case (give --lidc-root)")
    tmp = Path(tempfile.mkdtemp(prefix="lungfuse-bench-gui-"))
    axial = win.viewer.views["axial"]

    beats: list[float] = []
    stages: list[str] = []  # what the window said at each beat: names the stage of the worst stalls
    hb = QTimer()
    hb.setInterval(10)
    hb.setTimerType(Qt.TimerType.PreciseTimer)

    def beat() -> None:
        beats.append(time.perf_counter())
        stages.append(win.progress.format())

    hb.timeout.connect(beat)

    def wait(cond, timeout: float = 900.0) -> None:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        while not cond():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"bench_gui: timed out ({win.last_error or 'no error'})")

    loaded: list[bool] = []

    def on_loaded() -> None:  # the new CT is in the views; its first paint is still to come
        axial._image = None
        loaded.append(True)

    win.case_loaded.connect(on_loaded)

    def first_slice(result_path: Path, analyse: bool = True) -> float:
        wait(lambda: not win.busy())
        loaded.clear()
        t0 = time.perf_counter()
        win.open_case(str(ct), result_path=result_path, analyse=analyse)
        wait(lambda: (bool(loaded) and axial._image is not None) or win.last_error is not None)
        if win.last_error:
            raise SystemExit(f"bench_gui: {win.last_error}")
        return time.perf_counter() - t0

    def stalls(t_from: float) -> tuple[float, list[dict[str, object]], list[float]]:
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        top = sorted(range(len(gaps)), key=lambda i: -gaps[i])[:5]
        worst = [{"gap_ms": round(gaps[i] * 1000, 1), "before": stages[i], "after": stages[i + 1],
                  "at_s": round(beats[i] - t_from, 2)} for i in top]
        return (max(gaps) if gaps else float("nan")), worst, gaps

    # 0: the window's warm-up (imports + models in a worker, started when the window opens)
    # the worst case for the first slice: the reader opens a case the moment the window is up,
    # while the warm-up imports hold the GIL (the CT is shown, not analysed, here)
    hb.start()
    t_warm = time.perf_counter()
    win.warm_up()
    first_during_warmup = first_slice(tmp / "during_warmup.json", analyse=False)
    wait(lambda: win.warm or (win.warmup_worker is not None and win.warmup_worker.isFinished()))
    warm_s = time.perf_counter() - t_warm
    warm_gap, warm_worst, _ = stalls(t_warm)
    beats.clear()
    stages.clear()

    # 1 + 2: first open of the session and the stall during the real analysis
    t_open = time.perf_counter()
    first_cold = first_slice(tmp / "r.json")
    wait(lambda: win.result is not None or win.last_error is not None)
    t_result = time.perf_counter() - t_open
    hb.stop()
    worst_gap, worst, gaps = stalls(t_open)
    analysis_s = win.result.timings_s.get("total") if win.result is not None else None
    # second open: the saved result is loaded, not re-analysed
    wait(lambda: not win.busy())
    first_warm = first_slice(tmp / "r.json")
    wait(lambda: win.result is not None and not win.busy())

    # 3: rendering with every overlay on
    for box in (win.overlays.boxes, win.overlays.masks, win.overlays.heat):
        box.setChecked(True)
    win.select_finding(win.top_finding_id())
    app.processEvents()
    sc = win.scene
    assert sc is not None
    n_boxes = len(sc.boxes("axial"))
    paint_ms, cached_ms, compose_ms = [], [], []
    for _ in range(args.renders):
        axial._key = None  # recompose the picture each time, as a new slice or window needs
        t0 = time.perf_counter()
        axial.repaint()
        paint_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        axial.repaint()  # same slice again (crosshair moved in another view): the cached picture
        cached_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        sc.compose("axial")
        compose_ms.append((time.perf_counter() - t0) * 1000)

    # 4: scrolling through the series
    nz = sc.shape[0]
    views = list(win.viewer.views.values())
    t0 = time.perf_counter()
    for z in range(nz):
        sc.cursor = [z, sc.cursor[1], sc.cursor[2]]
        for v in views:
            v.repaint()
    fps_all = nz / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for z in range(nz):
        sc.cursor = [z, sc.cursor[1], sc.cursor[2]]
        axial.repaint()
    fps_axial = nz / (time.perf_counter() - t0)

    out = {
        "notice": "LungFuse is research software - NOT FOR DIAGNOSTIC USE.",
        "command": f"python bench/bench_gui.py --out {args.out} --case {args.case} --threads {args.threads}",
        "case": args.case, "shape_zyx": list(sc.shape), "platform": os.environ.get("QT_QPA_PLATFORM"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "system": platform.platform()},
        "window_px": [win.width(), win.height()], "axial_view_px": [axial.width(), axial.height()],
        "first_slice_s": {"during_warm_up": round(first_during_warmup, 3), "after_warm_up": round(first_cold, 3),
                          "reopen_saved_result": round(first_warm, 3), "target": 1.0},
        "analysis": {"open_to_result_s": round(t_result, 2), "analyze_case_total_s": analysis_s,
                     "threads": args.threads, "n_findings": len(win.result.findings) if win.result else None},
        "warm_up": {"s": round(warm_s, 2), "worst_stall_ms": round(warm_gap * 1000 - 10, 1), "worst_gaps": warm_worst,
                    "note": "imports + model load in a worker when the window opens, before a case is chosen"},
        "main_thread_stall_ms": {"heartbeat_ms": 10, "beats": len(beats),
                                 "worst_gap_ms": round(worst_gap * 1000, 1),
                                 "worst_stall_ms": round(worst_gap * 1000 - 10, 1),
                                 "p99_gap_ms": round(_pct(gaps, 0.99) * 1000, 1) if gaps else None,
                                 "target_stall_ms": 100, "worst_gaps": worst},
        "render_axial_all_overlays_ms": {"n": args.renders, "boxes_on_slice": n_boxes,
                                         "median": round(statistics.median(paint_ms), 2),
                                         "p95": round(_pct(paint_ms, 0.95), 2), "target_median": 20.0,
                                         "compose_only_median": round(statistics.median(compose_ms), 2),
                                         "cached_picture_median": round(statistics.median(cached_ms), 2)},
        "scroll_fps": {"slices": nz, "three_views": round(fps_all, 1), "axial_only": round(fps_axial, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    win.stop_worker()
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
