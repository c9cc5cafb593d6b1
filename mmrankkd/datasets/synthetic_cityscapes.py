"""A small synthetic street-scene data set in the real Cityscapes layout.

It lets the quick-start and the tests run the real mmseg ``CityscapesDataset``
and pipelines without downloading Cityscapes. Each image is a procedurally
drawn street seen from a car: sky on top, a road in perspective towards a
vanishing point, sidewalks, building facades with windows, walls, fences,
vegetation and terrain, poles with traffic signs and lights, cars, trucks,
buses, an occasional tram, people, riders on bicycles and motorcycles, and
sometimes the ego-vehicle's bonnet (ignore, 255). Colours follow the
Cityscapes palette with per-object jitter, shared textures, shadows, blur and
noise, so that the task is easy to learn but not trivial (thin poles, small
far objects and occlusions).

Layout written under ``root`` (what ``CityscapesDataset`` reads)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

Labels are Cityscapes train ids 0-18 with 255 as ignore. Every image is drawn
from its own seed (``seed``, split, index), so the set is deterministic and
an image does not depend on how many others are asked for.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np

# Cityscapes train ids (the order of mmseg's CityscapesDataset.METAINFO).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, \
    TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, \
    BICYCLE = range(19)
IGNORE = 255

PALETTE = np.array(
    [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156],
     [190, 153, 153], [153, 153, 153], [250, 170, 30], [220, 220, 0],
     [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
     [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100],
     [0, 0, 230], [119, 11, 32]],
    dtype=np.float32)

CITIES = dict(train=('synthburg', 'rankstadt'), val=('kendallheim', ))
MANIFEST = 'synthetic_cityscapes.json'
_SPLIT_ID = dict(train=0, val=1)


def _file_stems(split, num):
    """Relative stems ``<city>/<city>_<seq>_<frame>`` of a split's images."""
    cities = CITIES[split]
    stems = []
    for i in range(num):
        city = cities[i % len(cities)]
        stems.append(f'{city}/{city}_{i // len(cities):06d}_000019')
    return stems


def _expected_files(root, params):
    files = []
    for split in ('train', 'val'):
        for stem in _file_stems(split, params[f'num_{split}']):
            files.append(
                osp.join(root, 'leftImg8bit', split,
                         stem + '_leftImg8bit.png'))
            files.append(
                osp.join(root, 'gtFine', split,
                         stem + '_gtFine_labelTrainIds.png'))
    return files


class _Canvas:
    """An image and its label map, painted back to front."""

    def __init__(self, rng, height, width):
        self.rng = rng
        self.h, self.w = height, width
        self.img = np.zeros((height, width, 3), np.float32)
        self.lab = np.full((height, width), SKY, np.uint8)
        self.fine = rng.normal(0., 1., (height, width)).astype(np.float32)
        coarse = rng.normal(0., 1., (height // 12 + 2, width // 12 + 2))
        self.coarse = cv2.resize(
            coarse.astype(np.float32), (width, height),
            interpolation=cv2.INTER_CUBIC)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def color(self, cls, jitter=25.):
        """The class colour with a per-object jitter."""
        return np.clip(PALETTE[cls] + self.rng.uniform(-jitter, jitter, 3), 0,
                       255)

    def fill(self, mask, cls, color=None, texture=10., label=None):
        """Paints ``mask`` (bool or uint8 HxW) with a textured colour."""
        mask = mask.astype(bool)
        if not mask.any():
            return
        color = self.color(cls) if color is None else color
        tex = (self.coarse[mask] * texture + self.fine[mask] * texture * 0.5)
        self.img[mask] = color[None] + tex[:, None]
        self.lab[mask] = cls if label is None else label

    def poly(self, pts, cls, **kwargs):
        mask = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(pts)).astype(np.int32)], 1)
        self.fill(mask, cls, **kwargs)

    def rect(self, x0, y0, x1, y1, cls, **kwargs):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, **kwargs)

    def ellipse(self, cx, cy, rx, ry, cls, **kwargs):
        mask = np.zeros((self.h, self.w), np.uint8)
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))),
                    (max(1, int(round(rx))), max(1, int(round(ry)))), 0, 0,
                    360, 1, -1)
        self.fill(mask, cls, **kwargs)


class _Street:
    """The scene's perspective, drawn at random: horizon, vanishing point,
    road and sidewalk edges; with the canvas' size and pixel grid."""

    def __init__(self, rng, canvas):
        self.H, self.W = H, W = float(canvas.h), float(canvas.w)
        self.yy, self.xx = canvas.yy, canvas.xx
        self.yh = H * rng.uniform(0.36, 0.5)              # horizon
        self.vx = W * rng.uniform(0.4, 0.6)               # vanishing point
        self.road_l = W * rng.uniform(-0.15, 0.15)  # road edges at the bottom
        self.road_r = W * rng.uniform(0.85, 1.15)
        self.walk = W * rng.uniform(0.15, 0.35)     # sidewalk width at bottom

    def depth(self, y):
        """0 at the horizon, 1 at the bottom row."""
        return np.clip((y - self.yh) / (self.H - self.yh), 0., None)

    def ground_x(self, x_bottom, d):
        """x of a ground line through the vanishing point, at depth d."""
        return self.vx + (x_bottom - self.vx) * d

    def ground_y(self, d):
        """y of the ground at depth d."""
        return self.yh + (self.H - self.yh) * d


def _draw_sky(c):
    """A vertical gradient, lighter at the horizon."""
    sky = c.color(SKY, 20.)
    c.img[:] = sky[None, None] + (c.yy / float(c.h))[..., None] * 60. + \
        c.coarse[..., None] * 6.


def _draw_skyline(c, rng, st):
    """Distant buildings and trees along the horizon."""
    x = 0.
    while x < st.W:
        bw = st.W * rng.uniform(0.04, 0.12)
        top = st.yh - st.H * rng.uniform(0.03, 0.2)
        cls = BUILDING if rng.random() < 0.7 else VEGETATION
        c.rect(x, top, x + bw, st.yh + 2, cls, texture=6.)
        x += bw


def _draw_facades(c, rng, st, on_side, dcol, bottom, d_far):
    """Buildings of different heights with perspective window grids."""
    H, yy = st.H, st.yy
    cuts = np.sort(rng.uniform(d_far, 1.6, rng.integers(1, 5)))
    edges = np.concatenate([[d_far], cuts, [10.]])
    for d0, d1 in zip(edges[:-1], edges[1:]):
        top_h = H * rng.uniform(0.5, 2.0)   # height at depth 1
        top = st.yh - top_h * dcol
        m = on_side & (dcol >= d0) & (dcol < d1) & (yy >= top) & \
            (yy < bottom)
        col = c.color(BUILDING, 35.)
        c.fill(m, BUILDING, color=col, texture=8.)
        # windows: a perspective grid on the facade
        v = (yy - top) / np.maximum(bottom - top, 1.)
        rows = rng.integers(4, 10)
        per = rng.uniform(6., 12.)
        u = np.log(np.maximum(dcol, 1e-3)) * per
        win = m & (np.mod(v * rows, 1.) > 0.35) & \
            (np.mod(v * rows, 1.) < 0.75) & (np.mod(u, 1.) < 0.5) & \
            (v < 0.85)
        shade = rng.uniform(-50., 40.)
        c.img[win] += shade


def _draw_roadside_trees(c, rng, st, side, outer, on_side, bottom, d_far,
                         top_h):
    """A terrain strip beside the sidewalk with trees standing on it."""
    H, yh = st.H, st.yh
    m = on_side & (st.yy >= yh) & (st.yy < bottom)
    c.fill(m, TERRAIN, texture=12.)
    for _ in range(rng.integers(2, 6)):
        d = rng.uniform(d_far, 1.3)
        cx = st.ground_x(outer, d) + side * st.W * 0.05 * d
        cy = yh + (H - yh) * d - top_h * d * rng.uniform(.6, 1.)
        r = top_h * d * rng.uniform(0.3, 0.6)
        c.ellipse(cx, cy, r, r * 0.9, VEGETATION, texture=22.)
        c.rect(cx - r * 0.08, cy, cx + r * 0.08,
               yh + (H - yh) * d, VEGETATION,
               color=np.array([90., 70., 40.]))


def _draw_walled_side(c, rng, st, on_side, dcol, bottom, top_h):
    """A building behind a wall."""
    yy = st.yy
    wall_h = st.H * rng.uniform(0.1, 0.3)
    top = st.yh - top_h * dcol
    m = on_side & (yy >= top) & (yy < bottom - wall_h * dcol)
    c.fill(m, BUILDING, texture=8.)
    m = on_side & (yy >= bottom - wall_h * dcol) & (yy < bottom)
    c.fill(m, WALL, texture=14.)


def _draw_side(c, rng, st, side):
    """Facades, trees or walls on one side (-1 left, 1 right), between the
    sidewalk's outer edge and a top line, both through the vanishing
    point."""
    outer = (st.road_l - st.walk) if side < 0 else (st.road_r + st.walk)
    kind = rng.choice(['buildings', 'vegetation', 'wall'],
                      p=[0.6, 0.25, 0.15])
    d_far = rng.uniform(0.08, 0.3)     # depth where the facade ends
    x_far = st.ground_x(outer, d_far)
    on_side = (st.xx < x_far) if side < 0 else (st.xx > x_far)
    # column depth: 0 at the vanishing point, 1 at the sidewalk's edge
    dcol = np.clip((st.xx - st.vx) / (outer - st.vx), 0., None)
    bottom = st.yh + (st.H - st.yh) * dcol
    if kind == 'buildings':
        _draw_facades(c, rng, st, on_side, dcol, bottom, d_far)
        return
    top_h = st.H * rng.uniform(0.4, 1.0)
    if kind == 'vegetation':
        _draw_roadside_trees(c, rng, st, side, outer, on_side, bottom, d_far,
                             top_h)
    else:
        _draw_walled_side(c, rng, st, on_side, dcol, bottom, top_h)


def _draw_ground(c, rng, st):
    """Road, lane markings, sidewalks and cast shadows."""
    xx, yy, W = st.xx, st.yy, st.W
    d = st.depth(yy)
    below = yy >= st.yh
    left_edge = st.ground_x(st.road_l, d)
    right_edge = st.ground_x(st.road_r, d)
    road = below & (xx >= left_edge) & (xx <= right_edge)
    c.fill(road, ROAD, texture=9.)
    lane = road & (np.abs(xx - st.ground_x(W * rng.uniform(0.4, 0.6), d)) <
                   W * 0.006 * (1 + 2 * d)) & \
        (np.mod(np.log(np.maximum(d, 1e-3)) * 6., 1.) < 0.5)
    c.img[lane] = 235.
    for edge, outer in ((left_edge, st.road_l - st.walk),
                        (right_edge, st.road_r + st.walk)):
        outer_x = st.ground_x(outer, d)
        m = below & (np.minimum(edge, outer_x) <= xx) & \
            (xx <= np.maximum(edge, outer_x)) & ~road
        c.fill(m, SIDEWALK, texture=10.)
    # cast shadows on the ground (labels unchanged)
    for _ in range(rng.integers(0, 3)):
        x0, x1 = np.sort(rng.uniform(0, W, 2))
        sh = below & (xx > x0 + (yy - st.yh) * 0.3) & \
            (xx < x1 + (yy - st.yh) * 0.3)
        c.img[sh] *= rng.uniform(0.55, 0.8)


def _draw_fence(c, rng, st):
    """Sometimes a fence along a sidewalk's outer edge."""
    if rng.random() >= 0.4:
        return
    H, yh, yy = st.H, st.yh, st.yy
    side_outer = st.road_l - st.walk if rng.random() < 0.5 else \
        st.road_r + st.walk
    fh = H * rng.uniform(0.08, 0.18)
    dd = np.clip((st.xx - st.vx) / (side_outer - st.vx), 0., None)
    m = (dd > rng.uniform(0.1, 0.5)) & (yy < yh + (H - yh) * dd) & \
        (yy > yh + (H - yh) * dd - fh * dd)
    bars = np.mod(np.log(np.maximum(dd, 1e-3)) * 25., 1.) < 0.35
    c.fill(m & (bars | (np.abs(yy - (yh + (H - yh) * dd - fh * dd * .9))
                       < 1.5)), FENCE, texture=8.)


def _scene_objects(rng):
    """(kind, depth) of the scene's objects, far to near, so that near ones
    are drawn last and occlude far ones."""
    objects = []
    for _ in range(rng.integers(2, 6)):
        objects.append(('pole', rng.uniform(0.15, 1.0)))
    for _ in range(rng.integers(1, 7)):
        objects.append(('car', rng.uniform(0.1, 0.9)))
    if rng.random() < 0.35:
        objects.append(('truck', rng.uniform(0.1, 0.7)))
    if rng.random() < 0.25:
        objects.append(('bus', rng.uniform(0.1, 0.6)))
    if rng.random() < 0.1:
        objects.append(('train', rng.uniform(0.05, 0.3)))
    for _ in range(rng.integers(0, 6)):
        objects.append(('person', rng.uniform(0.15, 1.0)))
    for _ in range(rng.integers(0, 3)):
        objects.append(('rider', rng.uniform(0.15, 0.9)))
    objects.sort(key=lambda o: o[1])
    return objects


def _draw_pole(c, rng, st, dd, yb, left):
    """A pole at the sidewalk, with a sign or a traffic light or neither."""
    x = st.ground_x((st.road_l - st.walk * 0.4) if left else
                    (st.road_r + st.walk * 0.4), dd)
    ph, pw = st.H * 0.9 * dd, max(1., st.W * 0.008 * dd)
    c.rect(x - pw, yb - ph, x + pw, yb, POLE, texture=5.)
    r = max(1.5, st.W * 0.02 * dd)
    u = rng.random()
    if u < 0.4:
        c.ellipse(x + (r if left else -r), yb - ph + r, r, r, SIGN,
                  texture=4.)
    elif u < 0.8:
        c.rect(x - r * 0.6, yb - ph, x + r * 0.6, yb - ph + 2.6 * r,
               LIGHT, color=np.array([40., 40., 30.]), texture=4.,
               label=LIGHT)
        lamp = rng.integers(3)
        c.ellipse(x, yb - ph + (0.45 + 0.8 * lamp) * r, r * 0.4,
                  r * 0.4, LIGHT, texture=0.)


def _draw_vehicle(c, rng, st, kind, dd, yb):
    """A car, truck, bus or tram on the road."""
    lanes = rng.uniform(0.15, 0.85)
    x = st.ground_x(st.road_l + (st.road_r - st.road_l) * lanes, dd)
    cw = dict(car=0.3, truck=0.36, bus=0.42, train=0.5)[kind] * st.W * dd
    ch = cw * dict(car=0.55, truck=0.9, bus=0.85, train=0.8)[kind]
    cls = dict(car=CAR, truck=TRUCK, bus=BUS, train=TRAIN)[kind]
    body = rng.uniform(40, 220, 3) if kind == 'car' else None
    if kind == 'car':
        c.rect(x - cw / 2, yb - ch * 0.55, x + cw / 2, yb - ch * 0.1,
               cls, color=body, texture=6.)
        c.poly([(x - cw * 0.35, yb - ch * 0.55),
                (x - cw * 0.25, yb - ch),
                (x + cw * 0.25, yb - ch),
                (x + cw * 0.35, yb - ch * 0.55)], cls,
               color=body * 0.4 + 40, texture=4.)
        for wx in (x - cw * 0.32, x + cw * 0.32):
            c.rect(wx - cw * 0.09, yb - ch * 0.2, wx + cw * 0.09, yb,
                   cls, color=np.array([20., 20., 20.]), texture=3.)
    else:
        c.rect(x - cw / 2, yb - ch, x + cw / 2, yb - ch * 0.08, cls,
               color=body, texture=7.)
        c.rect(x - cw * 0.45, yb - ch * 0.85, x + cw * 0.45,
               yb - ch * 0.55, cls,
               color=np.array([50., 60., 70.]), texture=4.)
        for wx in (x - cw * 0.35, x + cw * 0.35):
            c.rect(wx - cw * 0.06, yb - ch * 0.12, wx + cw * 0.06, yb,
                   cls, color=np.array([20., 20., 20.]), texture=3.)


def _draw_person(c, rng, st, dd, yb, left):
    """A pedestrian on the sidewalk: legs, coat, head."""
    edge = (st.road_l - st.walk * rng.uniform(0.1, 0.9)) if left else \
        (st.road_r + st.walk * rng.uniform(0.1, 0.9))
    x = st.ground_x(edge, dd)
    ph = st.H * 0.5 * dd
    pw = ph * 0.3
    coat = c.color(PERSON, 60.)
    c.rect(x - pw * 0.25, yb - ph * 0.45, x - pw * 0.05, yb, PERSON,
           color=np.array([40., 40., 60.]), texture=4.)
    c.rect(x + pw * 0.05, yb - ph * 0.45, x + pw * 0.25, yb, PERSON,
           color=np.array([40., 40., 60.]), texture=4.)
    c.ellipse(x, yb - ph * 0.62, pw * 0.45, ph * 0.22, PERSON,
              color=coat, texture=5.)
    c.ellipse(x, yb - ph * 0.9, pw * 0.22, ph * 0.1, PERSON,
              color=np.array([225., 180., 150.]), texture=3.)


def _draw_rider(c, rng, st, dd, yb, left):
    """A rider on a bicycle or a motorcycle near the road's edge."""
    moto = rng.random() < 0.4
    x = st.ground_x(st.road_l + (st.road_r - st.road_l) *
                    (0.1 if left else 0.9), dd)
    bh = st.H * 0.22 * dd
    bw = bh * 1.6
    vcls = MOTORCYCLE if moto else BICYCLE
    for wx in (x - bw * 0.35, x + bw * 0.35):
        c.ellipse(wx, yb - bh * 0.35, bh * 0.35, bh * 0.35, vcls,
                  color=np.array([25., 25., 25.]), texture=3.)
    if moto:
        c.rect(x - bw * 0.3, yb - bh * 0.8, x + bw * 0.3,
               yb - bh * 0.35, vcls, texture=6.)
    else:
        c.poly([(x - bw * 0.35, yb - bh * 0.35),
                (x, yb - bh * 0.85), (x + bw * 0.35, yb - bh * 0.4),
                (x + bw * 0.3, yb - bh * 0.55),
                (x, yb - bh * 0.65), (x - bw * 0.3, yb - bh * 0.3)],
               vcls, texture=5.)
    rh = st.H * 0.3 * dd
    c.ellipse(x, yb - bh * 0.8 - rh * 0.35, rh * 0.16, rh * 0.35,
              RIDER, texture=6.)
    c.ellipse(x, yb - bh * 0.8 - rh * 0.8, rh * 0.1, rh * 0.1,
              RIDER, color=np.array([225., 180., 150.]), texture=3.)


def _draw_objects(c, rng, st):
    """Poles, vehicles, people and riders, far to near."""
    for kind, dd in _scene_objects(rng):
        yb = st.ground_y(dd)
        left = rng.random() < 0.5
        if kind == 'pole':
            _draw_pole(c, rng, st, dd, yb, left)
        elif kind in ('car', 'truck', 'bus', 'train'):
            _draw_vehicle(c, rng, st, kind, dd, yb)
        elif kind == 'person':
            _draw_person(c, rng, st, dd, yb, left)
        else:
            _draw_rider(c, rng, st, dd, yb, left)


def _draw_bonnet(c, rng, st):
    """Sometimes the ego vehicle's bonnet: ignored in the labels, as in
    Cityscapes."""
    if rng.random() < 0.5:
        c.ellipse(st.W / 2, st.H * 1.12, st.W * 0.7,
                  st.H * rng.uniform(0.15, 0.22), ROAD,
                  color=np.array([30., 30., 35.]), texture=3., label=IGNORE)


def _camera(img, rng):
    """Global illumination, a little blur (optics) and sensor noise."""
    img = img * rng.uniform(0.7, 1.15) + rng.uniform(-15, 15, 3)
    img = cv2.GaussianBlur(img, (3, 3), 0.7)
    img = img + rng.normal(0., rng.uniform(3., 9.), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_scene(rng, height, width):
    """Draws one street scene, back to front; returns (RGB uint8 image,
    uint8 labels). The order of the steps is the order of the random draws:
    changing it changes every image of a seed."""
    c = _Canvas(rng, height, width)
    _draw_sky(c)
    st = _Street(rng, c)
    _draw_skyline(c, rng, st)
    for side in (-1, 1):
        _draw_side(c, rng, st, side)
    _draw_ground(c, rng, st)
    _draw_fence(c, rng, st)
    _draw_objects(c, rng, st)
    _draw_bonnet(c, rng, st)
    return _camera(c.img, rng), c.lab


def draw_synthetic_cityscapes_scene(height=256, width=512, seed=0):
    """Draws one synthetic scene without writing it.

    Args:
        height (int): Image height. Defaults to 256.
        width (int): Image width. Defaults to 512.
        seed (int | Sequence[int]): Seed of this scene. Defaults to 0.

    Returns:
        tuple[np.ndarray, np.ndarray]: An RGB ``uint8`` image (H, W, 3) and
        its ``uint8`` train-id labels (H, W), with 255 for ignore.
    """
    rng = np.random.default_rng(seed)
    return _draw_scene(rng, height, width)


def make_synthetic_cityscapes(root,
                              num_train=200,
                              num_val=50,
                              height=256,
                              width=512,
                              seed=0):
    """Writes a synthetic data set in the Cityscapes layout, once.

    Nothing is drawn when ``root`` already holds a complete set made with the
    same arguments (a manifest ``synthetic_cityscapes.json`` is written last).
    A set made with other arguments is replaced (only its own files are
    removed).

    Args:
        root (str): Data root, as ``data_root`` of ``CityscapesDataset``.
        num_train (int): Number of training images. Defaults to 200.
        num_val (int): Number of validation images. Defaults to 50.
        height (int): Image height in pixels. Defaults to 256.
        width (int): Image width in pixels. Defaults to 512.
        seed (int): Seed of the whole set; image ``i`` of a split is drawn
            from ``(seed, split, i)``. Defaults to 0.

    Returns:
        str: ``root``.
    """
    params = dict(num_train=int(num_train), num_val=int(num_val),
                  height=int(height), width=int(width), seed=int(seed),
                  version=1)
    manifest = osp.join(root, MANIFEST)
    if osp.isfile(manifest):
        with open(manifest) as f:
            old = json.load(f)
        if old == params and all(
                osp.isfile(p) for p in _expected_files(root, params)):
            return root
        try:
            stale = _expected_files(root, old)
        except (KeyError, TypeError):
            stale = []
        for path in stale:
            if osp.isfile(path):
                os.remove(path)
        os.remove(manifest)

    for split in ('train', 'val'):
        for i, stem in enumerate(_file_stems(split, params[f'num_{split}'])):
            img_path = osp.join(root, 'leftImg8bit', split,
                                stem + '_leftImg8bit.png')
            seg_path = osp.join(root, 'gtFine', split,
                                stem + '_gtFine_labelTrainIds.png')
            img, lab = draw_synthetic_cityscapes_scene(
                height, width, seed=(seed, _SPLIT_ID[split], i))
            os.makedirs(osp.dirname(img_path), exist_ok=True)
            os.makedirs(osp.dirname(seg_path), exist_ok=True)
            cv2.imwrite(img_path, img[..., ::-1])  # cv2 writes BGR
            cv2.imwrite(seg_path, lab)
    with open(manifest, 'w') as f:
        json.dump(params, f)
    return root
