"""Tiny copies of the real IQA datasets, laid out as each is distributed.

Each `make_*` writes one dataset's folder -- the one its archive unpacks to
(`TOP_FOLDERS`) -- with the file names, headers, .mat variables and folder
nesting of the real download, from the sources named in the comments
(docs/datasets.md has the same evidence). Pictures are small random (or
given) images; labels are made up.
"""

import csv
import os
from typing import Callable, List, Optional

import numpy as np
from PIL import Image
import scipy.io

# The folder each dataset's download unpacks to (a manual_dir may be it or
# hold it): builder name -> folder name.
TOP_FOLDERS = {
    "koniq10k": "koniq10k",
    "spaq": "SPAQ",
    "paq2piq": "database",
    "ava": "AVA_dataset",
    "live_challenge": "ChallengeDB_release",
    "kadid10k": "kadid10k",
}

ImageFn = Callable[[int], np.ndarray]


def random_image(h=12, w=16) -> ImageFn:
  return lambda i: np.random.default_rng(i).integers(0, 256, (h, w, 3),
                                                     np.uint8)


def write_image(path, pixels, fmt="JPEG"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, format=fmt)


def write_csv(path, header, rows):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def make_koniq(base, n=10, image: Optional[ImageFn] = None,
               resolution="1024x768", split_file_in_metadata=False
               ) -> List[str]:
  """KonIQ-10k: two CSVs and the `1024x768/` folder of its zip.

  Sources: the score file's columns as fastiqa documents them
  (baidut/PaQ-2-PiQ `fastiqa/labels/KonIQ.py`: image_name, c1..c5,
  c_total, MOS on 1..5, MOS_zscore; SSL92/hyperIQA `folders.py` reads
  image_name and MOS_zscore beside `1024x768/`); the split file is the
  subpic/koniq repository's `metadata/koniq10k_distributions_sets.csv`
  (header image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set; set is training /
  validation / test); `koniq10k_1024x768.zip` unpacks to `1024x768/`
  (fastiqa's KonIQ.py; subpic/koniq's notebook unzips the 512x384 zip to
  `512x384/`).
  """
  image = image or random_image()
  names = [f"{1000 + i}.jpg" for i in range(n)]
  sets = ["training"] * (n - 4) + ["validation"] * 2 + ["test"] * 2
  for i, name in enumerate(names):
    write_image(os.path.join(base, resolution, name), image(i))
  write_csv(os.path.join(base, "koniq10k_scores_and_distributions.csv"),
            ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS",
             "SD", "MOS_zscore"],
            [[nm, 1, 2, 3, 4, 5, 15, 1 + i * 0.3, 0.5, 10.0 * i]
             for i, nm in enumerate(names)])
  sets_dir = os.path.join(base, "metadata") if split_file_in_metadata else base
  write_csv(os.path.join(sets_dir, "koniq10k_distributions_sets.csv"),
            ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS",
             "SD", "set"],
            [[nm, 0.1, 0.2, 0.3, 0.3, 0.1, 15, 70.0, 0.5, s]
             for nm, s in zip(names, sets)])
  return names


SPAQ_HEADER = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast",
               "Noisiness", "Sharpness"]


def make_spaq(base, n=12, fmt="xlsx", image: Optional[ImageFn] = None):
  """SPAQ: `Annotations/*.xlsx` and `TestImage/` (what SPAQ.zip unpacks to).

  Sources: h4nwei/SPAQ `README_SPAQ_unzip_problem_and_solution.md` (its
  dirtree.jpg: SPAQ/Annotations/MOS and Image attribute scores.xlsx, the
  split SPAQ.zip, TestImage/00001.jpg ...; its code reads sheet 0, column 0
  = image name, from `TestImage/`); pyiqa `scripts/process_spaq.py` reads the
  same .xlsx (`pd.read_excel`) and writes its columns first into
  `pyiqa/data/meta_info/meta_info_SPAQDataset.csv`, whose header starts
  `Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness`;
  `pyiqa/default_dataset_configs.yml` reads the images from `SPAQ/TestImage`.
  """
  image = image or (lambda i: random_image(12 + i, 20)(i))
  rows = [[f"{i + 1:05d}.jpg", 10.0 + i, 50, 51, 52, 53, 54]
          for i in range(n)]
  for i, r in enumerate(rows):
    write_image(os.path.join(base, "TestImage", r[0]), image(i))
  path = os.path.join(base, "Annotations",
                      f"MOS and Image attribute scores.{fmt}")
  if fmt == "csv":
    write_csv(path, SPAQ_HEADER, rows)
  else:
    import openpyxl  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wb = openpyxl.Workbook()
    wb.active.append(SPAQ_HEADER)
    for r in rows:
      wb.active.append(r)
    wb.save(path)
  return rows


# The test file's header: baidut/PaQ-2-PiQ `database/labels640.csv`.
PAQ_TEST_HEADER = (
    "mos_patch_1,name_patch,width_patch_1,height_patch_1,top_patch_1,"
    "left_patch_1,bottom_patch_1,right_patch_1,mos_patch_2,width_patch_2,"
    "height_patch_2,top_patch_2,left_patch_2,bottom_patch_2,right_patch_2,"
    "mos_patch_3,width_patch_3,height_patch_3,top_patch_3,left_patch_3,"
    "bottom_patch_3,right_patch_3,mos_image,name_image,width_image,"
    "height_image,top_image,left_image,bottom_image,right_image").split(",")
# labels=640_padded.csv is stored as a large file we cannot read; its columns
# are those of the repository's first labels640.csv (commit 8be5d43, which
# still had is_valid); pyiqa's scripts/process_flive.py reads `name_image`
# and `is_valid` (True / False) from it.
PAQ_PADDED_HEADER = PAQ_TEST_HEADER + ["num_pix_image", "size_image",
                                       "size_image_cnt", "is_valid"]


def make_paq2piq(base, image: Optional[ImageFn] = None):
  """PaQ-2-PiQ: the label files of the repository's `database/` folder.

  Sources: baidut/PaQ-2-PiQ `database/labels_image.csv` (header `name,mos`;
  names `voc_emotic_ava/...`, `blur_dataset/...`, `EE371R/...` relative to
  `database/`, where database_prep.ipynb puts the pictures) and
  `database/labels640.csv` (the test pictures); `labels=640_padded.csv`, see
  PAQ_PADDED_HEADER. Returns (names, split of each name).
  """
  image = image or random_image(10, 14)
  names = ([f"voc_emotic_ava/AVA__{1000 + i}.jpg" for i in range(4)] +
           ["blur_dataset/motion0001.jpg", "blur_dataset/out_of_focus0002.jpg",
            "voc_emotic_ava/EMOTIC__big0.jpg",
            "voc_emotic_ava/VOC2012__big1.jpg",
            "EE371R/rq59.jpg"])
  split = (["train"] * 4 + ["validation"] * 2 + ["test"] * 2 +
           ["train"])  # EE371R/rq59.jpg: left out of both split files here.
  for i, n in enumerate(names):
    write_image(os.path.join(base, n), image(i))
  write_csv(os.path.join(base, "labels_image.csv"), ["name", "mos"],
            [[n, 50.0 + i] for i, n in enumerate(names)])
  pad = lambda name, valid: [
      {"name_image": name, "is_valid": valid, "mos_image": 50.0,
       "name_patch": "patches/" + name.split("/")[-1]}.get(c, 0)
      for c in PAQ_PADDED_HEADER]
  write_csv(os.path.join(base, "labels=640_padded.csv"), PAQ_PADDED_HEADER,
            [pad(n, s == "validation") for n, s in zip(names, split)
             if s in ("train", "validation") and not n.startswith("EE371R")])
  write_csv(os.path.join(base, "labels640.csv"), PAQ_TEST_HEADER,
            [[{"name_image": n, "mos_image": 50.0}.get(c, 0)
              for c in PAQ_TEST_HEADER]
             for n, s in zip(names, split) if s == "test"])
  return names, dict(zip(names, split))


def make_ava(base, n=25, image: Optional[ImageFn] = None):
  """AVA: `AVA.txt`, `aesthetics_image_lists/`, `images/<id>.jpg`.

  Sources: imfing/ava_downloader `AVA_dataset/README.txt` (AVA.txt columns:
  index, image id, 10 rating counts, 2 semantic tag ids, challenge id;
  space-separated, no header) and `AVA_dataset/aesthetics_image_lists/
  generic_test.jpgl` (one bare id a line); the pictures as `<id>.jpg` in
  `images/` (baidut/PaQ-2-PiQ `database_prep.ipynb` moves
  `database/AVA_dataset/images/*`). Returns (AVA.txt lines, test ids).
  """
  image = image or random_image(8, 10)
  lines = []
  for i in range(n):
    counts = np.random.default_rng(i).integers(0, 20, 10)
    counts[0] += 1
    tags = (i % 66 + 1, 0)
    lines.append(" ".join(map(str, [i + 1, 9000 + i, *counts, *tags, 1396])))
    write_image(os.path.join(base, "images", f"{9000 + i}.jpg"), image(i))
  with open(os.path.join(base, "AVA.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  os.makedirs(os.path.join(base, "aesthetics_image_lists"), exist_ok=True)
  test_ids = ["9000", "9001", "9002"]
  with open(os.path.join(base, "aesthetics_image_lists", "generic_test.jpgl"),
            "w") as f:
    f.write("\n".join(test_ids) + "\n")
  return lines, test_ids


def make_live_challenge(base, n=10, image: Optional[ImageFn] = None):
  """LIVE Challenge: `Data/*.mat` and `Images/` (+ `Images/trainingImages/`).

  Sources: pyiqa `scripts/process_livechallenge.py` (Data/AllImages_release.mat
  variable `AllImages_release`, names as `item[0][0]`; `AllMOS_release` and
  `AllStdDev_release` as `[0]` of a 1 x N array) and its
  `meta_info_LIVEChallengeDataset.csv` (names t1.bmp .. t7.bmp, then
  100.bmp, 101.bmp, ...); SSL92/hyperIQA `folders.py` (the same variables,
  pictures at `Images/<name>`, the first 7 dropped); fastiqa's
  `labels/CLIVE.py` in baidut/PaQ-2-PiQ (`Images/trainingImages/`).
  """
  image = image or random_image(9, 11)
  names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{100 + i}.bmp"
                                                 for i in range(n)]
  for i, n_ in enumerate(names):
    folder = "Images/trainingImages" if n_.startswith("t") else "Images"
    write_image(os.path.join(base, folder, n_), image(i), fmt="BMP")
  os.makedirs(os.path.join(base, "Data"), exist_ok=True)
  cell = np.empty((len(names), 1), dtype=object)
  for i, n_ in enumerate(names):
    cell[i, 0] = np.array([n_])
  scipy.io.savemat(os.path.join(base, "Data", "AllImages_release.mat"),
                   {"AllImages_release": cell})
  scipy.io.savemat(os.path.join(base, "Data", "AllMOS_release.mat"),
                   {"AllMOS_release":
                        np.arange(len(names), dtype=float)[None] * 5})
  scipy.io.savemat(os.path.join(base, "Data", "AllStdDev_release.mat"),
                   {"AllStdDev_release": np.ones((1, len(names)))})
  return names


def make_kadid(base, refs=10, image: Optional[ImageFn] = None):
  """KADID-10k: `dmos.csv` and `images/` inside `kadid10k/`.

  Sources: pyiqa `scripts/process_kadid10k.py` (`kadid10k/dmos.csv`, a
  header row, then dist_img, ref_img, dmos, var) and
  `pyiqa/default_dataset_configs.yml` (`kadid10k/images`); SSL92-style
  loaders read `dist_img`, `ref_img`, `dmos` and `images/<dist_img>`.
  """
  image = image or random_image(8, 8)
  rows = []
  for ref in range(1, refs + 1):
    write_image(os.path.join(base, "images", f"I{ref:02d}.png"), image(ref),
                fmt="PNG")
    for t in (1, 2):
      for lvl in (1, 2):
        n = f"I{ref:02d}_{t:02d}_{lvl:02d}.png"
        write_image(os.path.join(base, "images", n), image(ref * 10 + t),
                    fmt="PNG")
        rows.append([n, f"I{ref:02d}.png", 5 - lvl, 0.25])
  write_csv(os.path.join(base, "dmos.csv"),
            ["dist_img", "ref_img", "dmos", "var"], rows)
  return rows
