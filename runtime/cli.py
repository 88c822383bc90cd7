"""``edgecls run MODEL SOURCE...``: the runtime's command. Only typer/stdlib at import time (fast ``--help``)."""
from __future__ import annotations

from typing import List, Optional

import typer

from edgecls.runtime.slot.options import ALLOW_NEW_CLASSES, GOLDEN, GOLDEN_TOLERANCE

MAX_PIXELS = 50_000_000  # = edgecls.runtime.preprocess.DEFAULT_MAX_PIXELS (not imported here: fast --help)


def run_command(
    model: str = typer.Argument(..., help="Exported model: .onnx (with its metadata) or TensorRT .engine/.plan (with sidecar)."),
    sources: Optional[List[str]] = typer.Argument(
        None,
        help="Image files, folders (recursive), globs, video files, csi://N, v4l2:///dev/videoN, rtsp://…, http(s)://…, "
        "gst://PIPELINE (your own GStreamer pipeline ending in appsink)",
        show_default=False,
    ),
    camera: Optional[List[int]] = typer.Option(None, "--camera", help="V4L2 camera index (repeatable)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | tensorrt (cuda:N / tensorrt:N pick a GPU)."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads (default: onnxruntime's)."),
    batch: str = typer.Option("1", help="Images per inference call for files and videos (live sources: 1); auto: "
                              "the batch with the most images/s, measured on this model and machine at start."),
    streams: Optional[int] = typer.Option(None, "--streams", help="Inference calls in flight at once (default: files/"
                                          "videos on the CPU one per core with 1 thread each; live sources 1)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence threshold (default: the model's)."),
    coverage: Optional[float] = typer.Option(
        None, "--coverage", help="Conformal sets: each record's `set` holds the true label with this probability "
        "(e.g. 0.9; default: the model's own). A set of one label is the decision, a larger one is 'uncertain'."),
    topk: int = typer.Option(3, help="How many classes to list per result."),
    smooth: int = typer.Option(1, help="Average probabilities over the last N frames of a video/live source."),
    fmt: str = typer.Option("jsonl", "--format", help="Output on stdout: jsonl | csv | table."),
    show: bool = typer.Option(False, "--show", help="Show frames with label, confidence and FPS in a window."),
    save: Optional[str] = typer.Option(None, "--save", help="Write annotated images / videos to this folder."),
    allow_fallback: bool = typer.Option(
        False, "--allow-fallback", help="Run on the CPU (with a loud warning) if the requested provider is missing."
    ),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop each source after N frames."),
    workers: Optional[int] = typer.Option(None, help="Decode/preprocess threads (default: half the CPUs, 1 to 4)."),
    retries: int = typer.Option(5, help="Reopen attempts (exponential backoff) when a stream drops."),
    open_timeout: float = typer.Option(20.0, "--open-timeout", help="Seconds a camera/stream may take to open and send "
                                       "its first frame, else exit 5 (0: wait as long as OpenCV does)."),
    rtsp_latency: int = typer.Option(200, "--rtsp-latency", help="rtsp://: jitter buffer in ms of the hardware-decode "
                                     "GStreamer pipeline (lower: less delay, more risk of broken frames)."),
    rtsp_codec: str = typer.Option("h264", "--rtsp-codec", help="rtsp://: what the camera sends, h264 | h265 (for the "
                                   "hardware decoder)."),
    loop: bool = typer.Option(False, "--loop", help="Replay video files and image folders from the start when they "
                              "end (until Ctrl-C or --max-frames)."),
    realtime: bool = typer.Option(False, "--realtime", help="Play video files at their own frame rate as a camera "
                                  "would: the newest frame is classified, late ones dropped (counted), each record "
                                  "with capture time and capture→decision latency."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than "
                                   "this, read from the header before decoding (decompression bombs; 0: no bound)."),
    probs: bool = typer.Option(False, "--probs", help="Add every class probability to each record."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="Print the run summary to stderr."),
    summary_json: Optional[str] = typer.Option(None, "--summary-json", help="Also write the summary as JSON here."),
    backend: Optional[str] = typer.Option(None, "--backend", help="triton://HOST:PORT/MODEL: preprocess here, infer on "
                                          "a Triton (or `edgecls serve`) server; MODEL file gives the spec."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics of the run "
                                               "(frames, errors, reconnects, last-frame age) on this port (0: any)."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Interface of --metrics-port (0.0.0.0: "
                                     "every interface)."),
    view: Optional[str] = typer.Option(None, "--view", help="[HOST:]PORT: watch the run in a browser (annotated "
                                       "stream, a grid of cameras, decisions, frames/s, latency, /metrics; POST/DELETE "
                                       "/sources add and remove cameras); 127.0.0.1 unless HOST is given, which then "
                                       "needs an access token in $EDGECLS_TOKEN."),
    allow_new_classes: bool = ALLOW_NEW_CLASSES,
    golden: Optional[str] = GOLDEN,
    golden_tolerance: float = GOLDEN_TOLERANCE,
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Swap in a new model when the model file is "
                               "replaced (SIGHUP reloads it either way)."),
    drift: bool = typer.Option(True, "--drift/--no-drift", help="Watch each source for drift against the images the "
                               "model was calibrated on (needs the model's .drift.json; records carry `drift`)."),
    drift_reference: Optional[str] = typer.Option(None, "--drift-reference", help="The drift reference to use "
                                                  "(default: MODEL's .drift.json beside it)."),
    fps_cap: Optional[float] = typer.Option(None, "--fps-cap", help="Classify at most this many frames per second "
                                            "of each camera/stream (frames in between are not even converted)."),
    sources_file: Optional[str] = typer.Option(None, "--sources-file", help="Live sources, one a line: "
                                               "SOURCE, or id=NAME fps=N SOURCE (both optional); re-read when it changes (cameras "
                                               "start and stop while running); the run goes on until Ctrl-C."),
    collect: Optional[str] = typer.Option(None, "--collect", help="Keep the frames worth a person's look in this "
                                          "folder (JPEG + manifest.jsonl), to label with `edgecls label DIR`."),
    collect_rules: Optional[str] = typer.Option(None, "--collect-rules", help="Which frames --collect keeps, "
                                                "comma-separated: unknown, empty-set, multi-set, uncertain, "
                                                "low-margin (low-margin:0.15 sets its threshold; default: all, "
                                                "margin 0.1)."),
    collect_max_mb: float = typer.Option(2048.0, "--collect-max-mb", help="Disk cap of the --collect folder in MB; "
                                         "collection stops there, the run goes on."),
    collect_rate: int = typer.Option(20, "--collect-rate", help="Live sources: at most N kept frames a minute per "
                                     "source and rule (0: no cap)."),
    on_drift: Optional[str] = typer.Option(None, "--on-drift", help="collect: while a source's drift alarm lasts, "
                                           "keep its frames in the --collect folder (caps and duplicates still apply)."),
) -> None:
    """Classify images, videos, cameras and streams with an exported model (no torch needed).

    Prints one JSON line per image/frame on stdout (or --format csv|table) and a summary on stderr.
    Exit codes: 0 every input classified, 2 bad model/input, 4 missing capability (GPU provider, TensorRT,
    OpenCV), 5 camera/stream cannot open, 6 some inputs failed (error records), 7 nothing classified or a live
    source lost, 130 Ctrl-C, 143 SIGTERM (both: the summary is printed and --save outputs finalized). SIGHUP, or
    replacing the model file, swaps in the new model between two frames once it passes its checks. A run put in
    the background by a script ignores SIGINT (POSIX shells do that): stop it with SIGTERM (`kill PID`).
    """
    from edgecls.runtime.collect.config import CollectConfig, parse_rules
    from edgecls.runtime.run.access import env_token
    from edgecls.runtime.run.config import RunConfig
    from edgecls.runtime.run.loop import run
    from edgecls.runtime.run.signals import sigterm_as_interrupt
    from edgecls.runtime.run.stats import write_summary_json
    from edgecls.runtime.slot.config import SlotConfig

    collecting = None
    if collect is not None:
        rules, margin = parse_rules(collect_rules)
        collecting = CollectConfig(collect, rules, margin, collect_max_mb, collect_rate)
    cfg = RunConfig(
        model=model,
        sources=tuple(sources or ()),
        cameras=tuple(camera or ()),
        device=device,
        threads=threads,
        batch=parse_batch(batch),
        streams=streams,
        threshold=threshold,
        coverage=coverage,
        topk=topk,
        smooth=smooth,
        fmt=fmt,
        show=show,
        save=save,
        allow_fallback=allow_fallback,
        max_frames=max_frames,
        workers=workers,
        retries=retries,
        open_timeout=None if open_timeout == 0 else open_timeout,
        rtsp_latency=rtsp_latency,
        rtsp_codec=rtsp_codec,
        loop=loop,
        realtime=realtime,
        probs=probs,
        summary=summary,
        max_pixels=max_pixels,
        backend=backend,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        view=view,
        view_token=env_token(),
        slot=SlotConfig(allow_new_classes=allow_new_classes, golden=golden, golden_tolerance=golden_tolerance,
                        watch=watch),
        drift=drift,
        drift_reference=drift_reference,
        fps_cap=fps_cap,
        sources_file=sources_file,
        collect=collecting,
        on_drift=on_drift,
    )
    with sigterm_as_interrupt():
        stats = run(cfg)
        if summary_json:
            write_summary_json(stats, summary_json)
    code = stats.exit_code()  # 0 / 6 some failed / 7 nothing or a source lost / 130 / 143 (edgecls.core.errors)
    if code:
        raise typer.Exit(code)


def parse_batch(text: str):
    """``--batch``: an integer >= 1 or ``auto`` (RunConfig names what is wrong)."""
    text = str(text).strip().lower()
    return "auto" if text == "auto" else int(text) if text.isdigit() else text
