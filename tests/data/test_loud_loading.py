"""Loud data loading (issue 13): no annotation is dropped silently."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_gravity.data.annotations import AnnotationError
from napari_gravity.data.datasets import dataset_report, open_dataset
from napari_gravity.data.synthetic.writers import write_dicom

XML_ONE_CALC = """<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Images</key><array><dict>
<key>ImageIndex</key><integer>0</integer><key>NumberOfROIs</key><integer>{n}</integer>
{rois}</dict></array></dict></plist>
"""
ROIS = """<key>ROIs</key><array><dict><key>Name</key><string>Calcification</string>
<key>Point_px</key><array><string>(20.0, 30.0)</string></array></dict></array>"""


def _inbreast(tmp_path, dicoms: dict[str, bool], xmls: dict[str, str]):
    root = tmp_path / "inb"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    img = np.full((64, 48), 100, np.uint16)
    img[:, :24] = 3000  # breast on the left
    for name in dicoms:
        write_dicom(root / "AllDICOMs" / f"{name}.dcm", img)
    for fid, text in xmls.items():
        (root / "AllXML" / f"{fid}.xml").write_text(text)
    return root


def test_inbreast_unmatched_files_are_counted(tmp_path):
    good = XML_ONE_CALC.format(n=1, rois=ROIS)
    root = _inbreast(
        tmp_path,
        {"20586908_6c613a14b80a8591_MG_L_CC_ANON": True, "case7": True},
        {"20586908": good, "22678622": good, "case7x": good},
    )
    refs = open_dataset(root, crop=None, mask=False)
    rep = dataset_report(refs)
    assert (rep.n_images, rep.n_annotated, rep.n_lesions) == (2, 1, 1)
    assert sorted(p.rsplit("/", 1)[1] for p in rep.unused) == ["22678622.xml", "case7x.xml"]
    assert rep.summary() == "2 images, 1 lesions, 2 annotation files unused"
    assert any("case7.dcm: the name does not fit the INbreast pattern" in w for w in rep.warnings)
    s = next(r for r in refs if r.image_id == "20586908").load()
    assert len(s.points) == 1


def test_inbreast_xml_without_rois_fails_loudly(tmp_path):
    root = _inbreast(
        tmp_path,
        {"20586908_6c613a14b80a8591_MG_L_CC_ANON": True},
        {"20586908": XML_ONE_CALC.format(n=2, rois="")},
    )
    refs = open_dataset(root, crop=None, mask=False)
    with pytest.raises(AnnotationError, match=r"20586908\.xml: Images\[0\] has no 'ROIs'"):
        refs[0].load()
    with pytest.raises(AnnotationError, match="no 'ROIs'"):
        dataset_report(refs)


def test_inbreast_sample_with_a_missing_xml_is_an_error(tmp_path):
    from napari_gravity.data.datasets import load_inbreast_sample

    root = _inbreast(tmp_path, {"20586908_6c613a14b80a8591_MG_L_CC_ANON": True}, {})
    dcm = next((root / "AllDICOMs").iterdir())
    with pytest.raises(AnnotationError, match=r"nope\.xml: no such annotation file"):
        load_inbreast_sample(dcm, root / "AllXML" / "nope.xml", crop=None)


def test_folder_unused_csv_and_duplicates(tmp_path):
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.zeros((32, 32), np.uint16))
    (tmp_path / "a.csv").write_text("y,x,radius\n5,5,2\n5,5,2\n9,9,2\n")
    (tmp_path / "B.CSV").write_text("y,x\n1,1\n")  # does not match b.tif
    (tmp_path / "patients.csv").write_text("image,patient\na,p1\n")
    rep = dataset_report(open_dataset(tmp_path))
    assert (rep.n_images, rep.n_lesions, len(rep.unused)) == (2, 3, 1)
    assert rep.unused[0].endswith("B.CSV")
    assert any("a.csv: 1 duplicated lesion point" in w for w in rep.warnings)


def test_patients_csv_conflicts_are_errors(tmp_path):
    from napari_gravity.data.annotations import AnnotationError as AE

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint16))
    (tmp_path / "patients.csv").write_text("image,patient\na,p1\na,p2\n")
    with pytest.raises(AE, match=r"patients\.csv, line 3: image 'a' is given two patients"):
        open_dataset(tmp_path)
    (tmp_path / "patients.csv").write_text("image,patient,patient\na,p1,p2\n")
    with pytest.raises(AE, match=r"patients\.csv, line 1: duplicated column"):
        open_dataset(tmp_path)
    (tmp_path / "patients.csv").write_text("image,patient\na,p1\na,p1\n")  # repeated, consistent
    assert open_dataset(tmp_path)[0].patient_id == "p1"


def test_unnamed_inbreast_rois_are_reported(tmp_path):
    rois = ROIS.replace("<key>Name</key><string>Calcification</string>", "")
    root = _inbreast(
        tmp_path,
        {"20586908_6c613a14b80a8591_MG_L_CC_ANON": True},
        {"20586908": XML_ONE_CALC.format(n=1, rois=rois)},
    )
    rep = dataset_report(open_dataset(root, crop=None, mask=False))
    assert rep.n_lesions == 0
    assert any("1 ROI(s) without a Name" in w for w in rep.warnings)


def test_inbreast_format_on_another_folder_is_a_dataset_error(tmp_path):
    from napari_gravity.data.datasets import DatasetError

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint16))
    with pytest.raises(DatasetError, match="not an INbreast folder"):
        open_dataset(tmp_path, format="inbreast")
