#!/usr/bin/env python3
"""Regenerate the app's PNG icons (standard library only): a rounded blue square with
three white mesh nodes joined by lines. Run from splunk-app/: python3 tools/make_icons.py"""
import math
import os
import struct
import zlib

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "opsmesh_app")
BG = (11, 95, 138)
ALT_BG = (255, 255, 255)
FG = (255, 255, 255)
ALT_FG = (11, 95, 138)
NODES = [(0.5, 0.25), (0.24, 0.72), (0.76, 0.72)]


def seg_dist(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def coverage(x, y, size):
    """Return (inside rounded square, on mesh) for a point in unit coordinates."""
    r = 0.2
    cx = min(max(x, r), 1 - r)
    cy = min(max(y, r), 1 - r)
    inside = math.hypot(x - cx, y - cy) <= r
    mesh = False
    for i, (ax, ay) in enumerate(NODES):
        if math.hypot(x - ax, y - ay) <= 0.11:
            mesh = True
        bx, by = NODES[(i + 1) % 3]
        if seg_dist(x, y, ax, ay, bx, by) <= 0.035:
            mesh = True
    return inside, mesh


def render(size, bg, fg):
    ss = 4
    rows = []
    for py in range(size):
        row = bytearray([0])
        for px in range(size):
            acc = [0.0, 0.0, 0.0, 0.0]
            for sy in range(ss):
                for sx in range(ss):
                    x = (px + (sx + 0.5) / ss) / size
                    y = (py + (sy + 0.5) / ss) / size
                    inside, mesh = coverage(x, y, size)
                    if inside:
                        c = fg if mesh else bg
                        acc[0] += c[0]
                        acc[1] += c[1]
                        acc[2] += c[2]
                        acc[3] += 255
            n = ss * ss
            alpha = acc[3] / n
            if alpha:
                row += bytes([int(acc[0] * 255 / acc[3]), int(acc[1] * 255 / acc[3]), int(acc[2] * 255 / acc[3]), int(alpha)])
            else:
                row += bytes([0, 0, 0, 0])
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write(path, size, bg=BG, fg=FG):
    with open(os.path.join(APP, path), "wb") as fh:
        fh.write(render(size, bg, fg))


if __name__ == "__main__":
    write("appserver/static/opsmesh_alert.png", 48)
    write("static/appIcon.png", 36)
    write("static/appIcon_2x.png", 72)
    write("static/appIconAlt.png", 36, ALT_BG, ALT_FG)
    write("static/appIconAlt_2x.png", 72, ALT_BG, ALT_FG)
