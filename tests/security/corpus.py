"""Hostile files generated at test time (nothing big is stored in the repository).

Each builder writes a small file whose header claims far more than it holds: a reader that trusts
the header allocates gigabytes; a careful one refuses it from the header alone.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def tiled_tiff_bomb(path: Path, side: int = 100_000, tile: int = 256) -> Path:
    """A ~1.2 MB tiled, deflated uint8 TIFF claiming ``side`` × ``side`` pixels whose tiles all
    point at ONE deflated tile of zeros."""
    n_tiles = ((side + tile - 1) // tile) ** 2
    data = zlib.compress(bytes(tile * tile), 9)
    entries = [
        (256, 4, 1, side),  # ImageWidth LONG
        (257, 4, 1, side),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample SHORT
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 1),  # Photometric: min-is-black
        (277, 3, 1, 1),  # SamplesPerPixel
        (322, 4, 1, tile),  # TileWidth
        (323, 4, 1, tile),  # TileLength
        (324, 4, n_tiles, None),  # TileOffsets (array)
        (325, 4, n_tiles, None),  # TileByteCounts (array)
    ]
    ifd_off = 8
    ifd_size = 2 + 12 * len(entries) + 4
    tile_off = ifd_off + ifd_size
    offs_off = tile_off + len(data)
    counts_off = offs_off + 4 * n_tiles
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_off))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 324:
            value = offs_off
        elif tag == 325:
            value = counts_off
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += data
    out += np.full(n_tiles, tile_off, "<u4").tobytes()
    out += np.full(n_tiles, len(data), "<u4").tobytes()
    path.write_bytes(bytes(out))
    return path


def tiff_header_only(path: Path, side: int = 100_000) -> Path:
    """A striped uint16 TIFF header claiming ``side``² pixels with (almost) no data."""
    entries = [
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 1, 16),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),  # StripOffsets: just after the IFD
        (278, 4, 1, side),  # RowsPerStrip
        (279, 4, 1, side * side * 2 % (2**32)),  # StripByteCounts (a lie)
    ]
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0) + bytes(64)
    path.write_bytes(bytes(out))
    return path


def _dicom_prefix(rows: int, cols: int, transfer_syntax: str, **extra) -> tuple[bytes, bytes]:
    """(file preamble + meta, dataset-without-pixel-data bytes in explicit VR little endian)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for k, v in extra.items():
        setattr(ds, k, v)
    head = io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    from pydicom.filebase import DicomBytesIO

    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return head.getvalue(), body.getvalue()


def deflated_dicom_bomb(path: Path, side: int = 24_000) -> Path:
    """A ~1.1 MB Deflated-transfer-syntax DICOM holding ``side``² uint16 zeros (1.15 GB inflated)."""
    head, body = _dicom_prefix(side, side, "1.2.840.10008.1.2.1.99")
    n = side * side * 2
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [comp.compress(body + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, n))]
    parts.append(comp.flush(zlib.Z_FULL_FLUSH))
    # after a full flush the compressor starts afresh: equal chunks of zeros compress to equal
    # bytes, so one compressed chunk is repeated instead of deflating 1.15 GB
    chunk = 1 << 24
    zeros = bytes(chunk)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    assert block == again
    k, rest = divmod(n, chunk)
    parts.append(block * (k - 1) + again)
    parts.append(comp.compress(bytes(rest)) + comp.flush())
    path.write_bytes(head + b"".join(parts))
    return path


def rle_dicom_bomb(path: Path, side: int = 30_000) -> Path:
    """An RLE Lossless DICOM claiming ``side``² uint16 pixels with one tiny fragment."""
    from pydicom.encaps import encapsulate

    head, body = _dicom_prefix(side, side, "1.2.840.10008.1.2.5")
    # one RLE segment header: 2 segments (16-bit), then a few literal bytes
    frame = struct.pack("<16I", 2, 64, 70, *([0] * 13)) + bytes([1, 0, 0]) * 4
    pix = encapsulate([frame])
    elem = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + pix
    elem += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)  # sequence delimiter
    path.write_bytes(head + body + elem)
    return path


def png_bomb(path: Path, side: int = 60_000) -> Path:
    """A PNG of ``side``² 8-bit zeros (a few hundred kB: rows of zeros deflate ~1000:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = bytes(side + 1)
    parts = [comp.compress(row) for _ in range(min(side, 2000))]  # only the first rows: truncated
    parts.append(comp.flush())
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def jpeg_header_bomb(path: Path, side: int = 65_000) -> Path:
    """A small real JPEG whose SOF header is patched to claim ``side`` × ``side`` pixels."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.find(b"\xff\xc0")  # baseline start-of-frame: len(2) precision(1) height(2) width(2)
    assert i > 0
    data[i + 5 : i + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))
    return path
