"""Kubernetes binaries built once from Debian's source package, cached by version and patch."""

from __future__ import annotations

import fcntl
import os
import shutil
import tarfile
from pathlib import Path

from batcomputer_bundle.bundle import sha256_file
from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster_shell import CommandError, run, run_with_progress, say


def reflect2_digest() -> str:
    sources = [*cfg.DEBIAN_REFLECT2.glob("*.go"), *cfg.DEBIAN_REFLECT2.glob("*.s")]
    if not sources:
        raise CommandError(
            f"{cfg.DEBIAN_REFLECT2} is empty: run devtools/bootstrap.sh "
            "(package golang-github-modern-go-reflect2-dev)"
        )
    return cfg.digest_files(sources, cfg.DEBIAN_REFLECT2)


def go_version() -> str:
    return run(["go", "env", "GOVERSION"]).stdout.strip()


def k8s_cache_dir() -> Path:
    return cfg.cache_root() / "k8s"


def binaries_dir() -> Path:
    return k8s_cache_dir() / cfg.k8s_cache_key(reflect2_digest(), go_version()) / "bin"


def binaries_present(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in (*cfg.K8S_BINARIES, cfg.PAUSE_BINARY))


def ensure_binaries() -> Path:
    """The directory holding every cluster binary, building them first when missing.

    Two commands that both find the cache cold (a demo and a test run, say) would
    build into the same work folder and wreck each other's tree, so the build holds
    a lock and the second one waits for the first one's binaries.
    """
    bin_dir = binaries_dir()
    if binaries_present(bin_dir):
        return bin_dir
    k8s_cache_dir().mkdir(parents=True, exist_ok=True)
    with open(k8s_cache_dir() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binaries_present(bin_dir):
            return bin_dir
        return _build_binaries(bin_dir)


def _build_binaries(bin_dir: Path) -> Path:
    say(f"Kubernetes {cfg.K8S_VERSION} binaries not cached; building into {bin_dir}")
    say("cold build: about 7 minutes on 2 cores (apiserver, controller-manager, scheduler,")
    say("kubectl, then kubelet and kube-proxy without cloud providers)")
    tarball = fetch_source()
    work = bin_dir.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    tree = extract(tarball, work)
    patch_reflect2(tree)
    patch_kubelet_plugins(tree)
    build(tree, work / "logs")
    staging = bin_dir.with_name("bin.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    built = tree / "_output" / "local" / "bin" / "linux" / "amd64"
    for name in cfg.K8S_BINARIES:
        shutil.copy2(built / name, staging / name)
    compile_pause(tree, staging / cfg.PAUSE_BINARY)
    staging.rename(bin_dir)
    shutil.rmtree(work)
    say(f"Kubernetes binaries cached in {bin_dir}")
    return bin_dir


def fetch_source() -> Path:
    downloads = k8s_cache_dir() / "source"
    downloads.mkdir(parents=True, exist_ok=True)
    tarball = downloads / cfg.K8S_ORIG_TARBALL
    if not (tarball.is_file() and sha256_file(tarball) == cfg.K8S_ORIG_SHA256):
        say(f"apt-get source --download-only kubernetes={cfg.K8S_DEBIAN_SOURCE_VERSION} (34 MB)")
        try:
            run(
                [
                    "apt-get",
                    "source",
                    "--download-only",
                    f"kubernetes={cfg.K8S_DEBIAN_SOURCE_VERSION}",
                ],
                cwd=downloads,
            )
        except CommandError as error:
            raise CommandError(
                f"{error}\nIs there a deb-src entry? devtools/bootstrap.sh adds one."
            ) from error
    actual = sha256_file(tarball)
    if actual != cfg.K8S_ORIG_SHA256:
        raise CommandError(f"{tarball}: sha256 {actual}, expected {cfg.K8S_ORIG_SHA256}")
    return tarball


def extract(tarball: Path, work: Path) -> Path:
    say(f"extracting {tarball.name}")
    work.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(work, filter="tar")
    (tree,) = [entry for entry in work.iterdir() if entry.is_dir()]
    return tree


def patch_reflect2(tree: Path) -> None:
    """Swap the vendored reflect2 1.0.1 (crashes the apiserver under Go >= 1.18) for 1.0.2."""
    vendored = tree / cfg.VENDORED_REFLECT2
    for old in [*vendored.glob("*.go"), *vendored.glob("*.s")]:
        old.unlink()
    for new in [*cfg.DEBIAN_REFLECT2.glob("*.go"), *cfg.DEBIAN_REFLECT2.glob("*.s")]:
        shutil.copyfile(new, vendored / new.name)


def patch_kubelet_plugins(tree: Path) -> None:
    plugins = tree / cfg.KUBELET_PLUGINS_FILE
    plugins.write_text(cfg.comment_out_credential_providers(plugins.read_text()))


def build(tree: Path, logs: Path) -> None:
    # The tree's build scripts expect to sit inside a GOPATH as k8s.io/kubernetes.
    gopath = tree / ".go"
    package_dir = gopath / "src" / "k8s.io" / "kubernetes"
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    package_dir.symlink_to("../../..")
    env = {
        **{name: value for name, value in os.environ.items() if name != "GOFLAGS"},
        "GOPATH": str(gopath),
        "GOCACHE": str(k8s_cache_dir() / "go-build-cache"),
        "CGO_ENABLED": "0",
        # Nothing may be fetched during the build: everything is vendored.
        "GOPROXY": "off",
    }
    run_with_progress(
        ["make", f"WHAT={' '.join(cfg.CONTROL_PLANE_TARGETS)}"],
        label="build control plane",
        log_path=logs / "control-plane.log",
        env=env,
        cwd=package_dir,
    )
    run_with_progress(
        ["make", f"WHAT={' '.join(cfg.NODE_TARGETS)}", "GOFLAGS=-tags=providerless"],
        label="build kubelet + kube-proxy (providerless)",
        log_path=logs / "node.log",
        env=env,
        cwd=package_dir,
    )


def compile_pause(tree: Path, output: Path) -> None:
    run(["gcc", "-Os", "-static", "-o", output, tree / "build" / "pause" / "linux" / "pause.c"])
    run(["strip", output])
