"""Registry-free image builds: debootstrap base, host wheelhouse, buildah, containerd import.

The base image and the wheelhouse are cached under the batcomputer cache
directory, keyed by what produces them; buildah's layer cache makes a rebuild
after a code change redo only the source layers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster_shell import CommandError, run, run_with_progress, say
from batcomputer_dev.k8s_oci import write_single_layer_archive

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = "0.1.0"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
BUILD_TOOL_REQUIREMENTS = ("setuptools>=69,<81",)
WHEELHOUSE_IN_CONTEXT = REPO_ROOT / "build" / "wheels"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: Path
    extra: str


IMAGES = {
    "server": ImageSpec(
        f"ghcr.io/batcomputer/batcomputer-server:{IMAGE_TAG}",
        REPO_ROOT / "Dockerfile.server",
        "server",
    ),
    "operator": ImageSpec(
        f"ghcr.io/batcomputer/batcomputer-operator:{IMAGE_TAG}",
        REPO_ROOT / "Dockerfile.operator",
        "operator",
    ),
}


def base_image_key(debootstrap_version: str) -> str:
    recipe = [DEBIAN_SUITE, DEBIAN_MIRROR, "minbase", *BASE_PACKAGES, debootstrap_version]
    return hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:12]


def image_requirements(pyproject: dict, extras: tuple[str, ...]) -> list[str]:
    """What the Dockerfiles install from PyPI: base dependencies plus the extras."""
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return [*requirements, *BUILD_TOOL_REQUIREMENTS]


def wheelhouse_key(requirements: list[str], python_tag: str) -> str:
    return hashlib.sha256(json.dumps([python_tag, sorted(requirements)]).encode()).hexdigest()[:12]


def ensure_base_image() -> str:
    """The local name of the debootstrap base image, made once and cached."""
    debootstrap_version = run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"]).stdout
    key = base_image_key(debootstrap_version)
    name = f"localhost/batcomputer-base:{key}"
    if run(["buildah", "images", "-q", name], check=False).returncode == 0:
        return name
    archive = cfg.cache_root() / "base-image" / key / "base.oci.tar"
    if not archive.is_file():
        build_base_archive(archive, name)
    say(f"loading {archive.name} into buildah as {name}")
    image_id = run(["buildah", "pull", "--quiet", f"oci-archive:{archive}"]).stdout.split()[-1]
    run(["buildah", "tag", image_id, name])
    return name


def build_base_archive(archive: Path, name: str) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
        rootfs = Path(scratch) / "rootfs"
        run_with_progress(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                rootfs,
                DEBIAN_MIRROR,
            ],
            label="debootstrap base image (about 1 minute)",
            log_path=archive.parent / "debootstrap.log",
        )
        # Package caches and lists only make the image bigger; apt in a build
        # stage runs `apt-get update` first anyway.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftovers).glob("*"):
                if entry.is_file():
                    entry.unlink()
        layer = Path(scratch) / "layer.tar"
        run(["tar", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", layer, "."])
        write_single_layer_archive(layer, name, archive, entrypoint=("/bin/bash",))


def ensure_wheelhouse(extras: tuple[str, ...]) -> Path:
    """Wheels for every dependency of the images, built on the host (PyPI reachable here)."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    requirements = image_requirements(pyproject, extras)
    python_tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = cfg.cache_root() / "wheels" / wheelhouse_key(requirements, python_tag)
    if not (wheels / ".complete").exists():
        partial = wheels.with_name(wheels.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run_with_progress(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                partial,
                *requirements,
            ],
            label="wheelhouse for the images",
            log_path=wheels.with_name(wheels.name + ".log"),
        )
        (partial / ".complete").touch()
        shutil.rmtree(wheels, ignore_errors=True)
        partial.rename(wheels)
    return wheels


def stage_wheelhouse(wheels: Path) -> None:
    """Make the build context's wheelhouse match the cached one, touching only differences.

    Hard links when possible (same file system, no copy); unchanged wheels stay
    as they are, so buildah's cache of the dependency layer still applies.
    """
    WHEELHOUSE_IN_CONTEXT.mkdir(parents=True, exist_ok=True)
    wanted = {wheel.name: wheel for wheel in wheels.glob("*.whl")}
    for staged in WHEELHOUSE_IN_CONTEXT.iterdir():
        if staged.name not in wanted:
            staged.unlink()
    for name, wheel in wanted.items():
        target = WHEELHOUSE_IN_CONTEXT / name
        if target.exists():
            continue
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy2(wheel, target)


@contextlib.contextmanager
def images_lock() -> Iterator[None]:
    """One image build at a time on this machine: they share the build context."""
    lock_path = cfg.cache_root() / "images.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_images(kinds: list[str]) -> list[str]:
    with images_lock():
        return _build_images(kinds)


def _build_images(kinds: list[str]) -> list[str]:
    base = ensure_base_image()
    # One wheelhouse for both images: their dependency layers share it.
    extras = tuple(sorted({spec.extra for spec in IMAGES.values()}))
    stage_wheelhouse(ensure_wheelhouse(extras))
    for kind in kinds:
        spec = IMAGES[kind]
        run_with_progress(
            [
                "buildah",
                "bud",
                "--layers",
                "--pull=never",
                # The wheelhouse makes the build self-contained: it needs no network at all.
                "--network=none",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--build-arg",
                "WHEELHOUSE=build/wheels",
                "-f",
                spec.dockerfile,
                "-t",
                spec.name,
                REPO_ROOT,
            ],
            label=f"buildah bud {spec.dockerfile.name}",
            log_path=cfg.cache_root() / "image-logs" / f"{kind}.log",
        )
    return [IMAGES[kind].name for kind in kinds]


def buildah_image_id(name: str) -> str:
    return run(["buildah", "images", "--no-trunc", "--format", "{{.ID}}", name]).stdout.strip()


def import_into_cluster(name: str, paths: cfg.ClusterPaths) -> None:
    """Make a buildah image available to the local cluster's containerd (skipped when current)."""
    image_id = buildah_image_id(name)
    stamp = paths.root / "imported-images" / name.replace("/", "_").replace(":", "_")
    ctr = ["ctr", "--address", paths.containerd_socket, "-n", cfg.CONTAINERD_NAMESPACE]
    present = run([*ctr, "images", "ls", "-q", f"name=={name}"]).stdout.split()
    if present and stamp.is_file() and stamp.read_text() == image_id:
        return
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "image.oci.tar"
        run(["buildah", "push", "--quiet", name, f"oci-archive:{archive}:{name}"])
        result = run([*ctr, "images", "import", "--no-unpack", archive])
        imported = run([*ctr, "images", "ls", "-q", f"name=={name}"]).stdout.split()
        if not imported:
            raise CommandError(f"ctr import of {name} did not register the name: {result.stdout}")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(image_id)
    say(f"imported {name} into containerd ({cfg.CONTAINERD_NAMESPACE})")
