"""A photo corpus for ingest benchmarks, and a loopback HTTP server for it in its own process.

Photos come from real pictures inside installed packages; each of the N files is a different
random crop, flip, scale (1024-2048 px long side) and noise draw of one of them, saved as JPEG
q90, so sizes are photo-like (a few hundred KiB) and no two files are equal.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _sources() -> list:
    import numpy as np
    import skimage.data
    from PIL import Image

    images = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    for mod, rel in (("ultralytics", "assets/bus.jpg"), ("ultralytics", "assets/zidane.jpg"),
                     ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
                     ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg")):
        try:
            root = Path(__import__(mod).__file__).parent
            images.append(np.asarray(Image.open(root / rel).convert("RGB")))
        except (ImportError, OSError):
            continue
    return images


def _make(args: tuple[int, str]) -> None:
    import numpy as np
    from PIL import Image

    i, path = args
    rng = np.random.default_rng(i)
    src = _SOURCES[i % len(_SOURCES)]
    h, w = src.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = src[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    long_side = int(rng.integers(1024, 2049))
    scale = long_side / max(ch, cw)
    im = Image.fromarray(np.ascontiguousarray(crop)).resize((max(1, int(cw * scale)), max(1, int(ch * scale))),
                                                           Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (im.height, im.width, 1)).astype(np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


_SOURCES: list = []


def _init() -> None:
    _SOURCES[:] = _sources()


def build_corpus(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    missing = [(i, str(p)) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 2, initializer=_init) as pool:
            pool.map(_make, missing, chunksize=16)
    return paths


def _serve(files: list[str], port_file: str) -> None:
    data = [Path(f).read_bytes() for f in files]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts and CDNs do

        def log_message(self, *a):
            pass

        def do_GET(self):
            try:
                k = int(self.path.rsplit("/", 1)[-1].split(".", 1)[0])
            except ValueError:
                self.send_error(404)
                return
            body = data[k % len(data)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 256
    Path(port_file).write_text(str(httpd.server_address[1]))
    httpd.serve_forever()


@contextlib.contextmanager
def serve(files: list[Path]) -> Iterator[str]:
    """Serve `files` as http://127.0.0.1:PORT/img/K.jpg from a child process; yields the base URL."""
    port_file = str(files[0].parent / f".port-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(port_file)
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=([str(f) for f in files], port_file),
                                                        daemon=True)
    proc.start()
    try:
        for _ in range(600):
            if os.path.exists(port_file) and Path(port_file).read_text():
                break
            time.sleep(0.1)
        port = int(Path(port_file).read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.join(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(port_file)


def write_url_list(path: Path, base: str, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": [f"{base}/img/{k}.jpg" for k in range(n)]}), path)
