"""pipeline.mesh: region surfaces (marching cubes, bounded), colours and orthogonal planes."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import colorlabel, label2rgb
from skimage.draw import ellipsoid
from skimage.measure import label, marching_cubes, mesh_surface_area

from pipeline import mesh
from pipeline.errors import InputError


def _two_balls(shape=(40, 48, 56)):
    """Label 1: a ball of radius 10; label 2: a ball of radius 5 (smaller, so second)."""
    labels = np.zeros(shape, dtype=np.int32)
    big = ellipsoid(10, 10, 10)
    small = ellipsoid(5, 5, 5)
    labels[5:5 + big.shape[0], 5:5 + big.shape[1], 5:5 + big.shape[2]][big] = 1
    labels[25:25 + small.shape[0], 30:30 + small.shape[1], 40:40 + small.shape[2]][small] = 2
    return labels


def test_colours_are_label2rgbs_cycle():
    assert mesh.LABEL_COLOR_NAMES == tuple(colorlabel.DEFAULT_COLORS)
    labels = np.arange(13)[None]  # sequential labels: label2rgb's rank is the label
    expected = (label2rgb(labels, bg_label=0) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(mesh.label_rgb(labels), expected)
    assert mesh.label_hex(1) == "#ff0000" and mesh.label_hex(11) == "#ff0000"
    assert mesh.label_hex(2) == "#0000ff"


def test_a_region_surface_is_marching_cubes_of_its_mask_placed_in_the_volume():
    labels = _two_balls()
    out = mesh.surface_mesh(labels)
    assert out.step == 1 and out.n_regions == 2 and out.n_shown == 2
    assert [r.label for r in out.regions] == [1, 2]  # largest first
    big = out.regions[0]
    verts, faces, _, _ = marching_cubes(np.pad(labels == 1, 1).astype(np.float32), 0.5,
                                        allow_degenerate=False)
    assert len(big.faces) == len(faces)
    # the same surface, shifted by the crop's origin: same area, centre at the ball's centre
    assert mesh_surface_area(big.vertices, big.faces) == pytest.approx(
        mesh_surface_area(verts, faces), rel=1e-5)
    centre = np.argwhere(labels == 1).mean(axis=0)
    np.testing.assert_allclose(big.vertices.mean(axis=0), centre, atol=0.2)
    assert big.vertices.dtype == np.float32 and big.faces.dtype == np.int32
    assert big.color == mesh.label_hex(1) and big.voxels == int((labels == 1).sum())
    assert out.triangles == sum(len(r.faces) for r in out.regions)


def test_spacing_scales_the_vertices_per_axis():
    labels = _two_balls()
    iso = mesh.surface_mesh(labels)
    aniso = mesh.surface_mesh(labels, spacing=(2.0, 0.5, 0.25))
    a, b = iso.regions[0].vertices, aniso.regions[0].vertices
    np.testing.assert_allclose(b, a * np.array([2.0, 0.5, 0.25], dtype=np.float32), rtol=1e-5)
    assert aniso.spacing == (2.0, 0.5, 0.25)


def test_the_triangle_cap_is_estimated_before_running_and_kept():
    rng = np.random.default_rng(0)
    noise = rng.random((64, 64, 64)) > 0.7
    labels = label(noise).astype(np.int32)
    faces = sum(mesh.boundary_faces(labels == lab) for lab in
                np.argsort(-np.bincount(labels.ravel())[1:])[:20] + 1)
    out = mesh.surface_mesh(labels, max_triangles=5_000, max_regions=20)
    assert out.triangles <= 5_000
    assert out.step > 1
    assert out.estimated_triangles >= mesh.estimate_triangles(faces) * 0.99
    assert out.n_shown <= 20 and out.n_regions == int(labels.max())
    full = mesh.surface_mesh(labels, max_triangles=10**9, max_regions=20)
    assert full.step == 1 and full.triangles > 5_000
    # the estimate: 2.1 per face, measured on smooth regions; noise makes more (2.4 here)
    assert 0.8 < full.triangles / full.estimated_triangles < 1.2


def test_small_regions_keep_a_surface_at_a_coarse_step():
    labels = _two_balls((60, 80, 80))
    labels[50:53, 60:63, 60:63] = 3  # 3 voxels across
    out = mesh.surface_mesh(labels, max_triangles=600)
    assert out.step > 2
    assert {r.label for r in out.regions} == {1, 2, 3} and out.skipped == 0


def test_only_the_largest_regions_are_drawn():
    labels = _two_balls()
    out = mesh.surface_mesh(labels, max_regions=1)
    assert [r.label for r in out.regions] == [1] and out.n_regions == 2


def test_the_voxel_cap_coarsens_the_step():
    labels = _two_balls()
    out = mesh.surface_mesh(labels, max_voxels=2_000)
    assert out.step > 1


def test_empty_labels_give_an_empty_mesh():
    out = mesh.surface_mesh(np.zeros((4, 5, 6), dtype=np.uint16))
    assert out.regions == () and out.triangles == 0 and out.n_regions == 0


def test_boolean_mask_and_uint64_labels():
    labels = _two_balls()
    assert mesh.surface_mesh(labels > 0).n_regions == 2 - 1  # a mask is one region
    assert mesh.surface_mesh(labels.astype(np.uint64)).n_regions == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=np.zeros((4, 4))), "labels must be a 3D label volume"),
    (dict(labels=np.zeros((4, 4, 4), dtype=float)), "labels must be integers"),
    (dict(labels=-np.ones((4, 4, 4), dtype=int)), "labels must not be negative"),
    (dict(spacing=(1, 1)), r"spacing must have 3 values \(one per axis\), got 2"),
    (dict(spacing=(1, 0, 1)), "spacing must be 3 positive finite numbers"),
    (dict(spacing=(1, float("nan"), 1)), "spacing must be 3 positive finite numbers"),
    (dict(spacing="1,1,1"), "spacing must be 3 positive numbers"),
    (dict(spacing=(1, True, 1)), "spacing must be 3 positive numbers"),
    (dict(max_triangles=0), "max_triangles must be at least 1"),
    (dict(max_regions=2.5), "max_regions must be a whole number"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = dict(labels=np.zeros((4, 4, 4), dtype=np.int32))
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        mesh.surface_mesh(args.pop("labels"), **args)


@pytest.mark.parametrize("shape, limit, expected", [
    ((100, 100), 10_000, 1), ((101, 100), 10_000, 2), ((4096, 4096), 2**20, 4),
    ((5000, 3000), 2**20, 4), ((1, 10**7), 2**20, 10),
])
def test_plane_stride_keeps_a_plane_under_the_pixel_cap(shape, limit, expected):
    f = mesh.plane_stride(shape, limit)
    assert f == expected
    h, w = shape
    assert -(-h // f) * -(-w // f) <= limit
    if f > 1:
        assert -(-h // (f - 1)) * -(-w // (f - 1)) > limit


def test_planes_through_a_point():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    np.testing.assert_array_equal(mesh.plane(volume, "yx", (2, 3, 4)), volume[2])
    np.testing.assert_array_equal(mesh.plane(volume, "zx", (2, 3, 4)), volume[:, 3, :])
    np.testing.assert_array_equal(mesh.plane(volume, "zy", (2, 3, 4)), volume[:, :, 4])
    np.testing.assert_array_equal(mesh.plane(volume, "yx", (2, 3, 4), stride=2),
                                  volume[2, ::2, ::2])
    with pytest.raises(InputError, match=r"point \(4, 0, 0\) is outside the volume"):
        mesh.plane(volume, "yx", (4, 0, 0))
    with pytest.raises(InputError, match="name must be one of zy, zx, yx"):
        mesh.plane(volume, "xy", (0, 0, 0))


def test_contour_overlay_draws_outlines_in_the_regions_colours():
    labels = np.zeros((9, 9), dtype=np.int32)
    labels[1:5, 1:5] = 1
    labels[5:8, 5:8] = 2
    out = mesh.contour_overlay(labels)
    assert out.shape == (9, 9, 4) and out.dtype == np.uint8
    assert tuple(out[1, 1]) == (255, 0, 0, 255)  # an outline pixel of region 1: red
    assert tuple(out[5, 5]) == (0, 0, 255, 255)  # region 2: blue
    assert out[2, 2, 3] == 0 and out[0, 0, 3] == 0  # inside (not filled), background
    filled = mesh.contour_overlay(labels, fill_alpha=0.5)
    assert filled[2, 2, 3] == 128 and filled[0, 0, 3] == 0
    with pytest.raises(InputError, match="fill_alpha must be between 0 and 1"):
        mesh.contour_overlay(labels, fill_alpha=2)
    with pytest.raises(InputError, match="labels2d must be a 2D plane"):
        mesh.contour_overlay(labels[None])
