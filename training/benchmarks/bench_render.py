"""Benchmark of the embedded synthetic scene: render rate, and rate of writing a whole dataset.

Usage (from anywhere, with the project's venv active)::

    python training/benchmarks/bench_render.py [--frames 300] [--width 640 --height 480]
        [--workers 1 2] [--formats png jpg] [--repeats 3]

Prints one table row per measurement, each the median of ``--repeats`` runs:

- ``render``: :func:`posenet_train.synthetic.render` in this process (the frames of the default
  training trajectory, evenly spaced), OpenCV limited to one thread;
- ``dataset``: :func:`posenet_train.synthetic.write_dataset` end to end (render + image encoding
  and writing + pose files), ``--frames`` split 4:1 into train and test, with each worker count
  and image format; includes the start-up of the worker processes. The ``MB`` column is the size
  of the written dataset.

Building the scene (loading and cropping the photographs, about 0.4 s) is timed separately.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from posenet_train.synthetic import (
    IMAGE_FORMATS,
    PinholeCamera,
    build_scene,
    make_trajectories,
    render,
    write_dataset,
)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(
    frames: int = 300,
    width: int = 640,
    height: int = 480,
    workers: tuple[int, ...] = (1, 2),
    repeats: int = 3,
    formats: tuple[str, ...] = IMAGE_FORMATS,
) -> list[dict]:
    """Run the benchmark; print and return the rows."""
    start = time.perf_counter()
    scene = build_scene(0)
    build_s = time.perf_counter() - start
    camera = PinholeCamera.default(width, height)
    test_frames = max(1, frames // 5)
    train_frames = max(1, frames - test_frames)
    trajectories = make_trajectories(scene, train_frames, test_frames)
    poses = [trajectories["train"].T_world_camera(i) for i in range(train_frames)]
    poses += [trajectories["test"].T_world_camera(i) for i in range(test_frames)]

    rows = []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        render_s = _median_time(
            lambda: [render(scene, p, camera.K, width, height) for p in poses], repeats
        )
    finally:
        cv2.setNumThreads(threads)
    rows.append(("render", "-", len(poses), 1, render_s, None))

    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        for image_format in formats:
            for n_workers in workers:
                folder = Path(tmp) / f"{image_format}_w{n_workers}"

                def write(
                    folder: Path = folder, n_workers: int = n_workers, fmt: str = image_format
                ) -> None:
                    write_dataset(
                        folder,
                        scene,
                        trajectories,
                        camera,
                        workers=n_workers,
                        image_format=fmt,
                        overwrite=True,
                        progress=False,
                    )

                seconds = _median_time(write, repeats)
                size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
                rows.append(("dataset", image_format, len(poses), n_workers, seconds, size_mb))

    print(f"scene build: {build_s:.2f} s; every row is the median of {repeats} runs")
    header = f"{'stage':<8} {'format':>6} {'frames':>6} {'resolution':>10} {'workers':>7} "
    print(header + f"{'total s':>8} {'frames/s':>9} {'MB':>7}")
    result = []
    for stage, image_format, n, n_workers, seconds, size_mb in rows:
        size = "-" if size_mb is None else f"{size_mb:.1f}"
        print(
            f"{stage:<8} {image_format:>6} {n:>6} {f'{width}x{height}':>10} {n_workers:>7} "
            f"{seconds:>8.2f} {n / seconds:>9.1f} {size:>7}"
        )
        result.append(
            {
                "stage": stage,
                "format": image_format,
                "frames": n,
                "resolution": f"{width}x{height}",
                "workers": n_workers,
                "total_s": seconds,
                "frames_per_s": n / seconds,
                "size_mb": size_mb,
            }
        )
    return result


def cli() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    parser.add_argument("--width", type=int, default=640, help="image width (default 640)")
    parser.add_argument("--height", type=int, default=480, help="image height (default 480)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts to time write_dataset with (default 1 2)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=IMAGE_FORMATS,
        default=list(IMAGE_FORMATS),
        help="image formats to time write_dataset with (default: all, png jpg)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (default 3)")
    args = parser.parse_args()
    if args.frames < 2 or args.width < 1 or args.height < 1 or args.repeats < 1:
        parser.error("--frames must be >= 2, --width/--height/--repeats >= 1")
    if any(w < 1 for w in args.workers):
        parser.error(f"--workers must all be >= 1, got {args.workers}")
    main(
        args.frames,
        args.width,
        args.height,
        tuple(args.workers),
        args.repeats,
        tuple(args.formats),
    )


if __name__ == "__main__":
    cli()
