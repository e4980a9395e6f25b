"""Annotations: points CSV, napari Points CSV, INbreast XML, E-ophtha masks; their errors."""

from __future__ import annotations

import plistlib

import numpy as np
import pytest

from napari_gravity.data.annotations import (
    AnnotationError,
    inbreast_calcifications,
    mask_to_points,
    points_to_mask,
    read_inbreast_xml,
    read_lesion_mask,
    read_points_csv,
    write_inbreast_xml,
    write_lesion_mask,
    write_napari_points_csv,
    write_points_csv,
)


def test_points_csv_roundtrip_with_optional_columns(tmp_path):
    pts = np.array([[10.25, 20.5], [3.0, 4.75], [7.0, 1.0]])
    p = write_points_csv(
        tmp_path / "a.csv",
        pts,
        [1.5, 2.0, 3.0],
        score=[0.9, 0.5, 0.1],
        source=["model", "user", "model"],
        status=["accepted", "rejected", "pending"],
    )
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file
    t = read_points_csv(p, shape=(32, 32))
    np.testing.assert_allclose(t.points, pts)
    np.testing.assert_allclose(t.radii, [1.5, 2.0, 3.0])
    assert t.extra["source"] == ["model", "user", "model"]
    assert t.lines == [2, 3, 4]
    les = t.lesions()
    assert len(les) == 1 and les.extra["status"] == ["accepted"]


def test_points_csv_default_radius_and_napari_format(tmp_path):
    (tmp_path / "b.csv").write_text("y,x\n1,2\n3,4\n")
    t = read_points_csv(tmp_path / "b.csv", default_radius=2.5)
    np.testing.assert_allclose(t.radii, [2.5, 2.5])
    # napari Points CSV of a 3-D layer: the last two axes are (y, x)
    (tmp_path / "n.csv").write_text("index,axis-0,axis-1,axis-2\n0,5,10.5,20.25\n1,5,1,2\n")
    t = read_points_csv(tmp_path / "n.csv")
    np.testing.assert_allclose(t.points, [[10.5, 20.25], [1, 2]])
    write_napari_points_csv(tmp_path / "n2.csv", t.points)
    np.testing.assert_allclose(read_points_csv(tmp_path / "n2.csv").points, t.points)


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("y,x,radius\n1,2,3\n4,oops,3\n", 3, "'oops' is not a number"),
        ("y,x,radius\n1,2,3\n4,5\n", 3, "expected 3 fields"),
        ("y,x,radius\n1,2,-1\n", 2, "radius must be positive"),
        ("y,x,radius\n1,nan,1\n", 2, "not a finite number"),
        ("a,b\n1,2\n", 1, "missing columns"),
        ("", 1, "empty"),
        ("y,x,radius\n1,2,3\n\n40,2,1\n", 4, "outside the 32x32 image"),
        ("y,x,radius,score\n1,2,3,high\n", 2, "column 'score'"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path, text, line, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=match) as exc:
        read_points_csv(p, shape=(32, 32))
    assert exc.value.line == line
    assert f"bad.csv, line {line}" in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_point_on_the_image_edge_is_inside(tmp_path):
    (tmp_path / "e.csv").write_text("y,x\n-0.5,31.5\n")
    assert len(read_points_csv(tmp_path / "e.csv", shape=(32, 32))) == 1


def test_inbreast_xml_roundtrip_and_rules(tmp_path):
    pts = np.array([[100.3, 200.7], [50.0, 60.25]])
    rad = np.array([0.71, 6.5])
    extra = {
        "Name": "Mass",
        "NumberOfPoints": 3,
        "Point_px": ["(10, 10)", "(40, 12)", "(20, 60)"],
    }
    p = write_inbreast_xml(tmp_path / "1.xml", pts, rad, extra_rois=[extra])
    rois = read_inbreast_xml(p)
    assert [r.name for r in rois] == ["Calcification", "Calcification", "Mass"]
    cp, cr, names = inbreast_calcifications(rois)
    np.testing.assert_allclose(cp, pts, atol=1e-3)
    np.testing.assert_allclose(cr, rad, atol=1e-3)
    assert names == ["Calcification", "Calcification"]
    # a mass is not a calcification; its centre is the centre of its bounding box (y, x)
    assert rois[2].centre == pytest.approx((35.0, 25.0))
    assert rois[2].radius == pytest.approx(25.0)


def test_inbreast_one_point_roi_and_plural_names(tmp_path):
    plist = {
        "Images": [
            {
                "ImageIndex": 0,
                "NumberOfROIs": 2,
                "ROIs": [
                    {"Name": "Calcification", "NumberOfPoints": 1, "Point_px": ["(12.5, 7.25)"]},
                    {"Name": "Calcifications", "Point_px": ["(1, 1)", "(1.4, 1.2)"]},
                    {"Name": "Cluster", "Point_px": ["(0, 0)", "(100, 100)"]},
                ],
            }
        ]
    }
    (tmp_path / "x.xml").write_bytes(plistlib.dumps(plist))
    pts, rad, names = inbreast_calcifications(read_inbreast_xml(tmp_path / "x.xml"))
    np.testing.assert_allclose(pts, [[7.25, 12.5], [1.1, 1.2]])
    np.testing.assert_allclose(rad, [1.0, 0.5])  # one point -> 1 px; tiny contour -> min 0.5
    assert names == ["Calcification", "Calcifications"]


def test_inbreast_bad_files(tmp_path):
    (tmp_path / "a.xml").write_text("<plist><dict><key>Images</key>")
    with pytest.raises(AnnotationError, match=r"a\.xml.*not a valid plist"):
        read_inbreast_xml(tmp_path / "a.xml")
    (tmp_path / "b.xml").write_bytes(plistlib.dumps({"Foo": 1}))
    with pytest.raises(AnnotationError, match="'Images'"):
        read_inbreast_xml(tmp_path / "b.xml")
    bad = {"Images": [{"ROIs": [{"Name": "Calcification", "Point_px": ["(1, x)"]}]}]}
    (tmp_path / "c.xml").write_bytes(plistlib.dumps(bad))
    with pytest.raises(AnnotationError, match=r"Images\[0\]\.ROIs\[0\]: cannot parse"):
        read_inbreast_xml(tmp_path / "c.xml")
    (tmp_path / "d.xml").write_bytes(b"")
    with pytest.raises(AnnotationError, match="empty"):
        read_inbreast_xml(tmp_path / "d.xml")


def test_lesion_mask_roundtrip(tmp_path):
    pts = np.array([[10.3, 12.6], [30.0, 40.0], [50.5, 8.2]])
    rad = np.array([1.2, 3.0, 4.4])
    p = write_lesion_mask(tmp_path / "m.png", (64, 64), pts, rad)
    got_p, got_r = read_lesion_mask(p, shape=(64, 64))
    order = np.argsort(got_p[:, 0])
    np.testing.assert_allclose(got_p[order], pts, atol=0.5)
    np.testing.assert_allclose(got_r[order], rad, atol=0.5)
    with pytest.raises(AnnotationError, match="differs from the image"):
        read_lesion_mask(p, shape=(32, 64))


def test_mask_components_use_8_connectivity():
    m = np.zeros((10, 10), bool)
    m[2, 2] = m[3, 3] = True  # diagonal neighbours: one lesion
    m[7, 7] = True
    pts, _rad = mask_to_points(m)
    assert len(pts) == 2
    np.testing.assert_allclose(pts[0], [2.5, 2.5])
    assert points_to_mask((5, 5), [[2, 2]], [0.3]).sum() == 1  # tiny radius: still one pixel
