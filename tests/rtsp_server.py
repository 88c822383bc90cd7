"""A loopback RTSP server for the tests: N live test streams as RTP JPEG (``videotestsrc ! jpegenc ! rtpjpegpay``).

Run by Debian's own Python, where ``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0`` install GStreamer's bindings:

    /usr/bin/python3 tests/rtsp_server.py PORT N [FPS]

prints ``ready rtsp://127.0.0.1:PORT/camK`` for each stream once it listens, then serves until SIGTERM.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    mounts = server.get_mount_points()
    for k in range(n):
        factory = GstRtspServer.RTSPMediaFactory()
        # RTP JPEG needs I420 (4:2:0) frames
        factory.set_launch(
            f"( videotestsrc is-live=true pattern={k % 19} ! video/x-raw,format=I420,width=320,height=240,"
            f"framerate={fps}/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=96 )"
        )
        factory.set_shared(True)
        mounts.add_factory(f"/cam{k}", factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{port}", flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()  # SIGTERM's default action ends it
    for k in range(n):
        print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}/cam{k}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
