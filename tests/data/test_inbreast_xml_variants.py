"""INbreast XML parser on hand-written plists in the real format's variants (issues 13, 14).

The fixtures are written as text here, as INbreast's own files are (tabs, DOCTYPE, ``<real>``,
``Point_mm`` with three components), never with the project's writer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gravity.data.annotations import (
    AnnotationError,
    inbreast_calcifications,
    read_inbreast_xml,
)

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>Images</key>
\t<array>
"""
TAIL = """\t</array>
</dict>
</plist>
"""


def roi(name: str, points: list[str] | str, *, single_string: bool = False, n: int | None = None):
    pts = [points] if isinstance(points, str) else points
    if single_string:
        px = f"\t\t\t\t\t<string>{pts[0]}</string>\n"
    else:
        px = (
            "\t\t\t\t\t<array>\n"
            + "".join(f"\t\t\t\t\t\t<string>{p}</string>\n" for p in pts)
            + "\t\t\t\t\t</array>\n"
        )
    return (
        "\t\t\t\t<dict>\n"
        "\t\t\t\t\t<key>Area</key>\n\t\t\t\t\t<real>0</real>\n"
        "\t\t\t\t\t<key>Center</key>\n\t\t\t\t\t<string>(1542.000000, 2115.000000, 0.000000)</string>\n"
        "\t\t\t\t\t<key>Dev</key>\n\t\t\t\t\t<real>0</real>\n"
        "\t\t\t\t\t<key>IndexInImage</key>\n\t\t\t\t\t<integer>0</integer>\n"
        "\t\t\t\t\t<key>Max</key>\n\t\t\t\t\t<real>2853</real>\n"
        f"\t\t\t\t\t<key>Name</key>\n\t\t\t\t\t<string>{name}</string>\n"
        f"\t\t\t\t\t<key>NumberOfPoints</key>\n\t\t\t\t\t<integer>{n or len(pts)}</integer>\n"
        "\t\t\t\t\t<key>Point_mm</key>\n\t\t\t\t\t<array>\n"
        "\t\t\t\t\t\t<string>(107.940002, 148.050003, 0.000000)</string>\n\t\t\t\t\t</array>\n"
        "\t\t\t\t\t<key>Point_px</key>\n" + px + "\t\t\t\t\t<key>Total</key>\n"
        "\t\t\t\t\t<real>2853</real>\n\t\t\t\t\t<key>Type</key>\n\t\t\t\t\t<integer>0</integer>\n"
        "\t\t\t\t</dict>\n"
    )


def image(index: int, rois: list[str], *, declared: int | None = None, with_rois: bool = True):
    text = (
        "\t\t<dict>\n"
        f"\t\t\t<key>ImageIndex</key>\n\t\t\t<integer>{index}</integer>\n"
        f"\t\t\t<key>NumberOfROIs</key>\n\t\t\t<integer>{len(rois) if declared is None else declared}"
        "</integer>\n"
    )
    if with_rois:
        text += "\t\t\t<key>ROIs</key>\n\t\t\t<array>\n" + "".join(rois) + "\t\t\t</array>\n"
    return text + "\t\t</dict>\n"


def write(tmp_path, *images: str, name: str = "20586908.xml"):
    p = tmp_path / name
    p.write_text(HEAD + "".join(images) + TAIL, encoding="utf-8")
    return p


def test_real_format_one_point_and_contour(tmp_path):
    contour = ["(100.5, 200.0)", "(104.5, 200.0)", "(104.5, 203.0)", "(100.5, 203.0)"]
    p = write(
        tmp_path,
        image(
            0,
            [
                roi("Calcification", "(1542.000000, 2115.000000)"),
                roi("Calcification", contour),
                roi("Mass", ["(10, 10)", "(60, 40)"]),
            ],
        ),
    )
    rois = read_inbreast_xml(p)
    assert [r.name for r in rois] == ["Calcification", "Calcification", "Mass"]
    pts, rad, _ = inbreast_calcifications(rois)
    np.testing.assert_allclose(pts, [[2115.0, 1542.0], [201.5, 102.5]])  # (y, x)
    np.testing.assert_allclose(rad, [1.0, 2.0])  # one point: 1 px; contour: half its extent


def test_three_component_points_and_single_string(tmp_path):
    p = write(
        tmp_path,
        image(
            0,
            [
                roi("Calcification", ["(10.0, 20.0, 0.0)", "(14.0, 20.0, 0.0)"]),
                roi("Calcification", "(33.25, 44.75)", single_string=True),
                roi("Calcification", "(5, 6, 0)", single_string=True),
            ],
        ),
    )
    pts, rad, _ = inbreast_calcifications(read_inbreast_xml(p))
    np.testing.assert_allclose(pts, [[20.0, 12.0], [44.75, 33.25], [6.0, 5.0]])
    np.testing.assert_allclose(rad, [2.0, 1.0, 1.0])


def test_several_images_keep_their_image_index(tmp_path):
    p = write(
        tmp_path,
        image(0, [roi("Calcification", "(1, 2)")]),
        image(3, [roi("Calcification", "(7, 8)"), roi("Cluster", ["(0, 0)", "(9, 9)"])]),
    )
    rois = read_inbreast_xml(p)
    assert [(r.name, r.image_index) for r in rois] == [
        ("Calcification", 0),
        ("Calcification", 3),
        ("Cluster", 3),
    ]
    pts, _, _ = inbreast_calcifications(rois)
    np.testing.assert_allclose(pts, [[2, 1], [8, 7]])


def test_an_image_without_rois_is_loud(tmp_path):
    p = write(tmp_path, image(0, [], declared=3, with_rois=False))
    with pytest.raises(AnnotationError, match=r"20586908\.xml: Images\[0\] has no 'ROIs'"):
        read_inbreast_xml(p)
    # declared as empty: a lesion-free image is fine
    assert read_inbreast_xml(write(tmp_path, image(0, [], declared=0, with_rois=False))) == []
    # fewer ROIs than declared: a truncated file
    q = write(tmp_path, image(0, [roi("Calcification", "(1, 2)")], declared=4), name="q.xml")
    with pytest.raises(AnnotationError, match=r"q\.xml: .*NumberOfROIs 4 but holds only 1"):
        read_inbreast_xml(q)
    e = write(tmp_path, name="e.xml")
    with pytest.raises(AnnotationError, match=r"e\.xml: 'Images' is empty"):
        read_inbreast_xml(e)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("<integer>5</integer>", r"'Point_px' is a int"),
        ("<array><integer>5</integer></array>", r"point '5' is a int"),
        ("<array><string>(1, nan)</string></array>", r"not finite|cannot parse"),
        ("<array><string>" + "9" * 5000 + "</string></array>", r"cannot parse point '9{10,}"),
    ],
)
def test_bad_point_values_are_named(tmp_path, bad, match):
    good = roi("Calcification", "(1, 2)")
    broken = good.replace(
        "\t\t\t\t\t<array>\n\t\t\t\t\t\t<string>(1, 2)</string>\n\t\t\t\t\t</array>\n", bad + "\n"
    )
    assert broken != good
    p = write(tmp_path, image(0, [broken]))
    with pytest.raises(
        AnnotationError, match=r"20586908\.xml: Images\[0\]\.ROIs\[0\].*" + match
    ) as e:
        read_inbreast_xml(p)
    assert len(str(e.value)) < 400


def test_entity_and_binary_plist_bombs_are_refused(tmp_path):
    import plistlib

    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<plist version="1.0"><dict>'
        "<key>Images</key><array><dict><key>ROIs</key><array><dict><key>Name</key>"
        "<string>&b;</string><key>Point_px</key><string>(1, 2)</string></dict></array></dict>"
        "</array></dict></plist>"
    )
    p = tmp_path / "ent.xml"
    p.write_text(bomb)
    with pytest.raises(AnnotationError, match=r"ent\.xml: not a valid plist"):
        read_inbreast_xml(p)
    roi = {"Name": "Calcification", "Point_px": ["(1, 2)"]}
    q = tmp_path / "bin.xml"  # 200 kB, 200000 ROIs all referencing one dict
    q.write_bytes(plistlib.dumps({"Images": [{"ROIs": [roi] * 200_000}]}, fmt=plistlib.FMT_BINARY))
    with pytest.raises(AnnotationError, match=r"bin\.xml: a binary plist"):
        read_inbreast_xml(q)
