"""Where frames come from: image files, folders, globs, video files, cameras and streams.

- ``files.py``: image files, folders (recursive, sorted, by :func:`edgecls.core.images.list_images`) and globs are
  decoded with Pillow (no OpenCV needed), in order.
- ``video.py``: video files are read in order on a background thread with a bounded queue: nothing is dropped.
- ``live.py`` + ``cameras.py``: live sources (``--camera N``, ``csi://N``, ``v4l2:///dev/videoN``, ``rtsp://``,
  ``http(s)://``) are read on a background thread that keeps only the newest frame in a one-frame slot, so the
  consumer never sees a stale buffered frame; a stream that drops is reopened with bounded exponential backoff,
  then ends cleanly.
- ``parse.py``: SOURCE arguments → sources; ``frame.py``: the :class:`Frame` they all produce.

OpenCV (``cv2``, through ``opencv.py``) is imported only for video and live sources. On a Jetson use JetPack's
OpenCV (built with GStreamer, needed for ``csi://``); pip's opencv wheels have no GStreamer and would shadow it.
"""
