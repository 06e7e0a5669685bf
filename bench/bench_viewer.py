"""Web viewer benchmark: Debian's Chromium, driven by Playwright, reading a 500-slice CT
series from ``duckpacs serve`` (the product path: store, DuckDB index, DICOMweb). One run.

The series is made here with pydicom (512 x 512, 16-bit signed, rescaled to HU, each slice
different) and stored through STOW-RS. Then, with the viewer's page loaded:

- time to first image: from setting the series' address in the viewer until its first
  image is drawn (the ``duckpacs:shown`` event), on a freshly started server (cold) and then
  in fresh browser contexts (warm server caches, empty browser cache), median of 3;
  the target is 300 ms;
- scrolling the whole series at 25 images a second (as fast as a reader spins the wheel):
  for each step, the time until the image is drawn. A step "waits" when that is longer
  than one 60 Hz frame (17 ms); prefetching around the current image should leave none.

    python bench/bench_viewer.py [--slices 500] [--size 512] [--rate 25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.web_support.server import CHROMIUM, browser_available  # noqa: E402

from bench_web import load_duckpacs, run_duckpacs  # noqa: E402

FRAME_BUDGET_MS = 17.0

OPEN = """async ([hash, series]) => {
  const t0 = performance.now();
  const shown = new Promise((resolve) => {
    const on = (e) => {
      if (e.detail.series !== series) return;
      document.removeEventListener("duckpacs:shown", on);
      resolve();
    };
    document.addEventListener("duckpacs:shown", on);
  });
  location.hash = hash;
  await shown;
  return performance.now() - t0;
}"""

SCROLL = """async (rate) => {
  const v = window.duckpacs.viewer.active, n = v.series.items.length, step = 1000 / rate;
  const times = [];
  for (let i = 1; i < n; i++) {
    const t0 = performance.now();
    await v.show(i);
    const dt = performance.now() - t0;
    times.push(dt);
    if (dt < step) await new Promise((r) => setTimeout(r, step - dt));
  }
  return times;
}"""


def make_series(folder: Path, slices: int, size: int) -> tuple[str, str]:
    """An axial CT series: a body-like ellipse of soft tissue with a moving 'vessel'."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[0:size, 0:size]
    body = ((x - size / 2) / (size * 0.42)) ** 2 + ((y - size / 2) / (size * 0.33)) ** 2 < 1
    for n in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^Viewer", "BENCHVIEWER", "CT"
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 1, n + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, n]
        vessel = (x - size / 2 - 40 * np.sin(n / 30)) ** 2 + (y - size / 2) ** 2 < (size / 30) ** 2
        pixels = np.where(body, 1064, 24) + np.where(vessel, 300, 0) + (x * 7 + y * 3 + n) % 23
        ds.PixelData = pixels.astype(np.int16).tobytes()
        ds.save_as(folder / f"{n:04d}.dcm", enforce_file_format=True)
    return study, series


def first_image(page: Any, study: str, series: str) -> float:
    return float(page.evaluate(OPEN, [f"#/viewer/{study}/{series}", series]))


def run(slices: int, size: int, rate: float) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        files_dir = Path(tmp) / "files"
        files_dir.mkdir()
        study, series = make_series(files_dir, slices, size)
        files = sorted(files_dir.iterdir())
        mb = sum(f.stat().st_size for f in files) / 1e6
        with run_duckpacs(Path(tmp) / "data") as base:
            seconds = load_duckpacs(base, files)
            print(f"stored {len(files)} slices ({mb:.0f} MB) through STOW-RS in {seconds:.1f} s")
            url = base.removesuffix("/dicom-web")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                opens, scroll = [], []
                for attempt in range(4):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    page.goto(url + "/#/")
                    page.wait_for_selector("#studies tbody tr")
                    opens.append(first_image(page, study, series))
                    if attempt == 0:
                        scroll = page.evaluate(SCROLL, rate)
                    context.close()
                browser.close()
    waited = [t for t in scroll if t > FRAME_BUDGET_MS]
    print(f"first image of a {slices}-image series ({size}x{size}, 16-bit):")
    print(f"  cold server: {opens[0]:.0f} ms; warm server, fresh browser: median "
          f"{statistics.median(opens[1:]):.0f} ms (target 300 ms)")  # fmt: skip
    print(f"scrolling {len(scroll)} steps at {rate:g} images/s:")
    print(
        f"  median {statistics.median(scroll):.1f} ms to draw, p95 "
        f"{float(np.percentile(scroll, 95)):.1f} ms, max {max(scroll):.1f} ms; "
        f"{len(waited)} steps waited longer than {FRAME_BUDGET_MS:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rate", type=float, default=25.0, help="images per second")
    args = parser.parse_args()
    if not browser_available():  # like the other benchmarks without their peer: skip, say so
        print("bench_viewer skipped: needs playwright and Debian's chromium (/usr/bin/chromium)")
        return
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    run(args.slices, args.size, args.rate)


if __name__ == "__main__":
    main()
