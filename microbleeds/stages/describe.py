"""Describe: size, shape, contrast and context of every segmented candidate, in mm.

Features are computed on a small neighbourhood (patch) of each candidate, never on the whole
volume. Canonical voxel axes: 0 = left-right, 1 = posterior-anterior, 2 = inferior-superior, so
"in-plane" means the axial plane and "slices" are axial slices.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage as ndi

from ..contract import FEATURES  # noqa: F401 (the columns describe fills)
from .prepare import bounding_box
from .segment import FOCUS_MAX_ELONGATION, region_elongation

EDGE_CAP_MM = 5.0
LINE_REACH_MM = 4.0
"""How far beyond the candidate (mm) the thickness of the structure it touches is read (within the
patch's :data:`EDGE_CAP_MM` margin)."""


def describe_regions(regions, rel, mask, response, affine, voxel_size_mm, noise_sigma, shell_mm=1.5):
    """Feature table (list of dicts) for every region.

    Parameters
    ----------
    regions : segment.Regions
    rel : ndarray float32
        Relative intensity (tissue ~ 1).
    mask : ndarray bool
        Brain mask.
    response : ndarray float32
        FRST response map (seeds.frst_response).
    affine : ndarray (4, 4)
        Canonical voxel-to-world affine, mm.
    voxel_size_mm : sequence of 3 floats
    noise_sigma : float
        Noise standard deviation of ``rel``.
    shell_mm : float
        Thickness of the background shell around a candidate, mm.
    """
    vox = np.asarray(voxel_size_mm, dtype=float)
    focus_of_label = np.concatenate([[False], deep_round_foci(regions, vox)])
    rows = []
    for r in range(len(regions)):
        voxels = regions.region(r)
        row = _size_shape(voxels, rel, vox)
        row.update(_context(voxels, r + 1, regions.labels, rel, mask, vox, noise_sigma, shell_mm, focus_of_label))
        row["pixel_mm"] = float(vox[:2].min())
        row["reached_limit"] = bool(regions.reached_limit[r])
        row["frst_response"] = float(response[tuple(regions.seeds[r])])
        row["centroid_vox"] = _centroid(voxels, rel)
        row["world_mm"] = apply_affine(affine, row["centroid_vox"])
        rows.append(row)
    return rows


FOCUS_DEPTH = 0.8
"""A region at least this dark (relative intensity <= 0.2: its core dephased through) and round is a
focus of its own (:func:`deep_round_foci`): the halo of a neighbour touching it is not read on it."""


def deep_round_foci(regions, voxel_size_mm):
    """(m,) bool: regions at least :data:`FOCUS_DEPTH` dark and round
    (:func:`~microbleeds.stages.segment.region_elongation` below
    :data:`~microbleeds.stages.segment.FOCUS_MAX_ELONGATION`): microbleeds, whatever else they touch.
    A microbleed of a cluster touches its neighbours; the structure it is "embedded" in is made of
    them, not of a vein or a band of dark tissue."""
    deep = np.asarray(regions.depth) >= FOCUS_DEPTH
    return deep & (region_elongation(regions, voxel_size_mm, only=np.flatnonzero(deep)) < FOCUS_MAX_ELONGATION)


def _centroid(voxels, rel):
    """Darkness-weighted centroid of a region (voxel coordinates, float)."""
    weights = np.maximum(1.0 - rel[tuple(voxels.T)].astype(float), 1e-3)
    return (voxels * weights[:, None]).sum(axis=0) / weights.sum()


def _size_shape(voxels, rel, vox):
    n = len(voxels)
    volume = n * float(np.prod(vox))
    points = voxels * vox
    cov = np.cov(points.T, bias=True) if n > 1 else np.zeros((3, 3))
    cov = cov + np.eye(3) * vox.max() ** 2 / 12.0  # a voxel's shape within it is unknown: isotropic
    eig = np.sort(np.linalg.eigvalsh(cov))
    slices, areas = np.unique(voxels[:, 2], return_counts=True)
    shifts = []
    inplane = 0.0
    best_slice, best_area = None, -1
    previous = None
    for z, area_vox in zip(slices, areas):
        pts = points[voxels[:, 2] == z][:, :2]
        centre = pts.mean(axis=0)
        # drift between consecutive substantial slices (the tips of a focus are a few voxels)
        substantial = area_vox * 3 >= areas.max()
        if previous is not None and substantial:
            shifts.append(float(np.linalg.norm(centre - previous)))
        previous = centre if substantial else None
        inplane = max(inplane, _feret(pts, vox[:2]))
        if len(pts) > best_area:
            best_slice, best_area = pts, len(pts)
    area = best_area * vox[0] * vox[1]
    feret = _feret(best_slice, vox[:2])
    cov2 = (np.cov(best_slice.T, bias=True) if len(best_slice) > 1 else np.zeros((2, 2))) \
        + np.eye(2) * vox[:2].max() ** 2 / 12.0
    eig2 = np.sort(np.linalg.eigvalsh(cov2))
    values = rel[tuple(voxels.T)]
    return {
        "n_voxels": n,
        "volume_mm3": volume,
        "diameter_mm": float((6.0 * volume / np.pi) ** (1.0 / 3.0)),
        "max_inplane_diameter_mm": inplane,
        "depth": float(1.0 - values.min()),
        "mean_rel": float(values.mean()),
        "circularity": float(min(1.0, area / (np.pi * (feret / 2.0) ** 2))),
        "elongation": float(np.sqrt(eig[2] / max(eig[0], 1e-9))),
        "inplane_elongation": float(np.sqrt(eig2[1] / max(eig2[0], 1e-9))),
        "n_slices": int(len(slices)),
        "through_plane_ratio": float((len(slices) - 1) * vox[2] / max(inplane, 1e-6)),
        "centroid_shift_mm": float(max(shifts) if shifts else 0.0),
    }


def _feret(points_mm, pixel_mm):
    """Largest extent of a set of in-plane voxel centres, plus one pixel, mm."""
    if len(points_mm) > 400:
        points_mm = points_mm[np.linspace(0, len(points_mm) - 1, 400).astype(int)]
    diff = points_mm[:, None, :] - points_mm[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max() + np.mean(pixel_mm))


def _patch_bounds(voxels, shape, margin_vox):
    lo = np.maximum(voxels.min(axis=0) - margin_vox, 0)
    hi = np.minimum(voxels.max(axis=0) + margin_vox + 1, shape)
    return lo, hi


def _context(voxels, label, labels, rel, mask, vox, noise_sigma, shell_mm, focus_of_label=None):
    """Features that need the neighbourhood: contrast to a shell, CNR, vesselness, edge."""
    margin = np.ceil(np.maximum(EDGE_CAP_MM, 3 * shell_mm) / vox).astype(int) + 1
    lo, hi = _patch_bounds(voxels, rel.shape, margin)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p_rel, p_mask, p_labels = rel[box], mask[box], labels[box]
    own = p_labels == label
    # background shell: within shell_mm of the region, outside every region, inside the brain
    dist_out = ndi.distance_transform_edt(~own, sampling=vox)
    shell = (dist_out > 0) & (dist_out <= shell_mm + 0.5 * vox.max()) & (p_labels == 0) & p_mask
    background = float(np.median(p_rel[shell])) if shell.any() else 1.0
    if vox[2] > shell_mm + 0.5 * vox.max():  # thick slices: the shell is in-plane only
        background = _slice_profile_background(background, p_rel, _slice_neighbours(own) & (p_labels == 0) & p_mask)
    mean_rel = float(p_rel[own].mean())
    contrast = 1.0 - mean_rel / max(background, 1e-6)
    n = int(own.sum())
    edge = _edge_distance(p_mask, own, vox)
    other_foci = None if focus_of_label is None else focus_of_label[p_labels] & ~own
    halo_elongation, halo_extent, halo_ratio, width_ratio = _halo(p_rel, p_mask, own, voxels - lo, vox, other_foci)
    return {
        "halo_elongation": halo_elongation,
        "halo_extent_mm": halo_extent,
        "halo_depth_ratio": halo_ratio,
        "halo_width_ratio": width_ratio,
        "ring_interior_mm3": _ring_interior(own, p_rel, vox),
        "background": background,
        "contrast": float(contrast),
        "cnr": float((background - mean_rel) * np.sqrt(n) / max(noise_sigma, 1e-6)),
        "vesselness": _vesselness(p_rel, voxels - lo, vox),
        "edge_distance_mm": edge,
    }


def _slice_neighbours(own):
    """Voxels directly above and below the region (one slice, its in-plane footprint), not in it."""
    out = np.zeros_like(own)
    out[:, :, 1:] |= own[:, :, :-1]
    out[:, :, :-1] |= own[:, :, 1:]
    return out & ~own


def _slice_profile_background(inplane, p_rel, through):
    """Background of a region on slices thicker than its shell reaches: the mean of the in-plane
    shell's median (``inplane``) and the median of the voxels directly above and below it
    (``through``). Through a thick slice a focus's dephasing spreads in-plane (the field gradient
    across the slice, Gibbs ringing of a truncated matrix) and darkens its in-plane shell, so
    contrast judged against that shell alone understates it; the slices above and below are the
    other half of its surroundings (the slice profile). None of them: ``inplane``."""
    if not through.any():
        return inplane
    return 0.5 * (inplane + float(np.median(p_rel[through])))


def _halo(p_rel, p_mask, own, local_voxels, vox, other_foci=None):
    """Shape of the faint dark structure the candidate belongs to.

    The 26-connected component, at 3/8 of the candidate's depth below background (a little
    fainter than its half-depth outline), that contains the candidate. A vein fragment sits on a
    line of about its own darkness (elongated, reaching far); a focus is much darker than
    anything around it (tissue, nearby veins), so its component stays small and round.

    Returns
    -------
    elongation : float
        sqrt of the largest / smallest inertia eigenvalue of that component (mm).
    extent_mm : float
        Largest distance of its voxels from the candidate's centroid, mm (limited by the patch).
    depth_ratio : float
        Median darkness (1 - rel) of the component's voxels more than one voxel beyond the
        candidate (its centroid distance + its equivalent radius + one voxel), relative to the
        candidate's depth; 0 when there are none. A vein fragment continues at about its own
        darkness (ratio ~0.6-1); a focus beside a vein or a fainter focus is much darker than
        what it touches (hemosiderin dephases its core completely, a vein only partly). For a
        candidate itself at least :data:`FOCUS_DEPTH` dark, voxels of ``other_foci`` (deep round
        foci, :func:`deep_round_foci`) are left out: a cluster's neighbours are microbleeds of their
        own (a fainter spot beside a microbleed is still judged against it).
    width_ratio : float
        The candidate's thickness over the structure's next to it (:func:`_width_ratio`); 0 when
        the component does not reach beyond the candidate.
    """
    depth = 1.0 - float(p_rel[own].min())
    faint = (p_rel < 1.0 - 0.375 * depth) & p_mask | own
    labels, _ = ndi.label(faint, structure=np.ones((3, 3, 3)))
    component = labels == labels[tuple(local_voxels[0])]
    indices = np.argwhere(component)
    points = indices * vox
    centre = (local_voxels * vox).mean(axis=0)
    distance = np.sqrt(((points - centre) ** 2).sum(axis=1))  # of each component voxel from the centroid, mm
    extent = float(distance.max())
    cov = np.cov(points.T, bias=True) + np.eye(3) * vox.max() ** 2 / 12.0 if len(points) > 1 \
        else np.eye(3) * vox.max() ** 2 / 12.0
    eig = np.sort(np.linalg.eigvalsh(cov))
    own_pts = local_voxels * vox
    radius = (len(local_voxels) * float(np.prod(vox)) * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    reach = float(np.sqrt(((own_pts - centre) ** 2).sum(axis=1)).max()) + vox.max()
    reach = max(reach, radius + vox.max())
    beyond = distance > reach
    ratio = 0.0
    width_ratio = 0.0
    if beyond.any() and depth > 0:
        far = indices[beyond]
        between = far if other_foci is None or depth < FOCUS_DEPTH else far[~other_foci[tuple(far.T)]]
        ratio = float(np.median(1.0 - p_rel[tuple(between.T)]) / depth) if len(between) else 0.0
        width_ratio = _width_ratio(component, own, far, distance[beyond], reach, vox)
    return float(np.sqrt(eig[2] / max(eig[0], 1e-9))), extent, ratio, width_ratio


def _width_ratio(component, own, far, far_distance_mm, reach_mm, vox):
    """Thickness of the candidate over that of the structure it touches: the largest distance (mm)
    from one of its voxels to the outside of its 3/8-depth ``component`` (the radius of the
    largest ball inside it, in the candidate), over the same within the component's ``far`` voxels
    (those beyond the candidate's reach, at ``far_distance_mm`` from its centroid) up to
    :data:`LINE_REACH_MM` beyond ``reach_mm``: the vein it lies on, where it leaves the candidate.
    A darker stretch of a vein, a bend or a junction is about as thick as the vein (ratio ~1); a
    microbleed on a vein blooms well beyond the vein's width. Beyond the patch counts as inside
    the component (a structure leaving the patch is not thinned by its edge). 0 without such voxels."""
    near = far_distance_mm <= reach_mm + LINE_REACH_MM
    if not near.any():
        return 0.0
    inside, lo = _inside_distance(component, vox)
    line = float(inside[tuple((far[near] - lo).T)].max())
    return float(inside[tuple((np.argwhere(own) - lo).T)].max()) / max(line, 1e-6)


def _inside_distance(component, vox):
    """Distance (mm) from each voxel of ``component`` to the nearest voxel outside it, beyond the
    patch counting as inside, on the component's bounding box (and its offset): the box grown by one
    voxel holds, for every voxel in it, a nearer outside voxel than any beyond it (clamping a voxel
    to the grown box shortens its distance along every axis), so the values are the whole patch's."""
    box = bounding_box(component, 1)
    lo = np.array([b.start for b in box])
    # one voxel beyond each face: the patch's outside (inside the component) where the box reaches the
    # patch's edge, else background
    edges = tuple((b.start == 0, b.stop == n) for b, n in zip(box, component.shape))
    padded = np.pad(component[box], 1, constant_values=edges)
    return ndi.distance_transform_edt(padded, sampling=vox)[1:-1, 1:-1, 1:-1], lo


def _ring_interior(own, p_rel, vox):
    """Volume (mm3) that the candidate's own outline encloses without being dark itself: the
    holes of its half-depth region, slice by slice in the axial plane (a rim may be open above or
    below). A microbleed is dark to its centre (no hole); the haemosiderin rim of a cavernous
    malformation encloses a core of blood of mixed age that is not dephased (a hole of several
    mm across)."""
    holes = 0
    for k in range(own.shape[2]):
        plane = own[:, :, k]
        if plane.sum() >= 8:
            holes += int((ndi.binary_fill_holes(plane) & ~plane).sum())
    return float(holes * np.prod(vox))


def _edge_distance(p_mask, own, vox):
    """Distance (mm) from the region's nearest voxel to the brain-mask edge, capped at 5 mm.

    Beyond the patch counts as brain, beyond the image too: a field of view that cuts the
    brain is no brain edge."""
    padded = np.pad(p_mask, 1, mode="constant", constant_values=True)
    dist = ndi.distance_transform_edt(padded, sampling=vox)[1:-1, 1:-1, 1:-1]
    return float(min(dist[own].min(), EDGE_CAP_MM))


def _vesselness(p_rel, local_voxels, vox):
    """In-plane line-likeness (0..1) of the dark structure at the region's darkest voxel.

    2D Hessian of the axial slice, smoothed at the region's in-plane radius (mm): a dark line
    has one large positive curvature and one near zero (-> 1), a dark disk two alike (-> 0).
    In-plane, because a focus's blooming follows the dipole field and stretches along B0
    (superior-inferior); veins running through the slices are judged by ``through_plane_ratio``.
    """
    values = p_rel[tuple(local_voxels.T)]
    centre = local_voxels[int(np.argmin(values))]
    in_slice = local_voxels[local_voxels[:, 2] == centre[2]]
    radius_mm = np.sqrt(len(in_slice) * vox[0] * vox[1] / np.pi)
    sigma_mm = max(radius_mm / np.sqrt(2.0), 0.6 * vox[:2].min())
    sigma = sigma_mm / vox[:2]
    plane = p_rel[:, :, centre[2]].astype(np.float64)
    hessian = np.empty((2, 2))
    for a in range(2):
        for b in range(a, 2):
            order = [0, 0]
            order[a] += 1
            order[b] += 1
            d = ndi.gaussian_filter(plane, sigma, order=order, mode="nearest")[centre[0], centre[1]]
            hessian[a, b] = hessian[b, a] = d / (vox[a] * vox[b]) * sigma_mm ** 2
    small, large = sorted(np.linalg.eigvalsh(hessian), key=abs)
    if large <= 0:
        return 0.0
    return float(np.clip(1.0 - small / large, 0.0, 1.0))
