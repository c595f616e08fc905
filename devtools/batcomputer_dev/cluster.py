"""The local single-node Kubernetes 1.20.2 cluster: up, down, status.

Every component runs as a plain process started here (there is no systemd),
recorded by PID and start time, and stopped by exactly that PID. `up` is
idempotent: a healthy cluster is left alone; anything else, including what a
killed earlier run left behind, is cleared first and the cluster started
fresh (empty etcd; cached binaries, PKI and imported images are kept).

Pods reach services on the host through the bridge address: the API server at
10.244.0.1:6443 (also as the `kubernetes` Service) and Azurite, when started
with `--blobHost 10.244.0.1 --blobPort 10000`, at http://10.244.0.1:10000/devstoreaccount1.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev import cluster_host as host
from batcomputer_dev.cluster_pki import ensure_pki
from batcomputer_dev.cluster_shell import CommandError, run, say
from batcomputer_dev.k8s_build import ensure_binaries
from batcomputer_dev.k8s_oci import write_file_layer, write_single_layer_archive

REQUIRED_TOOLS = ("etcd", "containerd", "runc", "ctr", "iptables", "ip6tables", "conntrack", "ip")
COMPONENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_GRACE_SECONDS = 10
HEALTH_GRACE_SECONDS = 30


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_time: str

    @staticmethod
    def start_time_of(pid: int) -> str | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return None
        return fields[19]

    def alive(self) -> bool:
        return self.start_time_of(self.pid) == self.start_time


class ApiClient:
    """Minimal HTTPS client for readiness checks, with the admin certificate and no proxy."""

    def __init__(self, paths: cfg.ClusterPaths) -> None:
        context = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
        context.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        self._base = f"https://{cfg.BRIDGE_IP}:{cfg.API_PORT}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self._opener.open(self._base + path, timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as error:
            return 0, str(error)


class LocalCluster:
    def __init__(self, paths: cfg.ClusterPaths | None = None) -> None:
        self.paths = paths or cfg.ClusterPaths.from_environment()

    # --- public operations ----------------------------------------------------

    def up(self) -> None:
        with self._lock():
            started = time.monotonic()
            require_host()
            bin_dir = ensure_binaries()
            if self.healthy() or self._recovers_while_running(HEALTH_GRACE_SECONDS):
                say(f"cluster already up; KUBECONFIG={self.paths.kubeconfig}")
                return
            leftovers = self.leftovers()
            if leftovers:
                kinds = Counter(leftover.split()[0] for leftover in leftovers)
                summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
                say(f"clearing what an earlier run left behind ({summary})")
                self._teardown()
            self._start(bin_dir)
            say(f"cluster up in {time.monotonic() - started:.1f} s")
            say(f"export KUBECONFIG={self.paths.kubeconfig}")

    def down(self) -> None:
        with self._lock():
            require_host()
            started = time.monotonic()
            self._teardown()
            say(f"cluster down in {time.monotonic() - started:.1f} s; host state restored")

    def healthy(self) -> bool:
        if not all(self._record(name) for name in cfg.COMPONENTS_IN_START_ORDER):
            return False
        if not (host.bridge_exists() and host.forward_isolation_active()):
            return False
        if not host.component_egress_isolation_active():
            return False
        return self._node_ready() and self._api_get("/readyz")[0] == 200

    def _recovers_while_running(self, grace: float) -> bool:
        """Whether a cluster whose processes all live turns healthy within the grace time.

        On a loaded machine a readiness probe can time out; restarting a cluster
        others are using for that would be far worse than waiting a little.
        """
        deadline = time.monotonic() + grace
        while all(self._record(name) for name in cfg.COMPONENTS_IN_START_ORDER):
            if self.healthy():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return False

    def status(self) -> dict[str, object]:
        components = {}
        for name in cfg.COMPONENTS_IN_START_ORDER:
            record = self._record(name)
            components[name] = record.pid if record else None
        return {
            "components": components,
            "apiserver_ready": all(components.values()) and self._api_get("/readyz")[0] == 200,
            "node_ready": all(components.values()) and self._node_ready(),
            "kubeconfig": str(self.paths.kubeconfig),
        }

    def leftovers(self) -> list[str]:
        """Traces of the cluster on this host (empty after a clean `down`)."""
        found = [f"pid file {p.name}" for p in sorted(self.paths.pids.glob("*.pid"))]
        found += [f"process {pid}" for pid in self._stray_processes()]
        if host.bridge_exists():
            found.append(f"bridge {cfg.BRIDGE_NAME}")
        found += [f"iptables {chain}" for chain in host.leftover_iptables_chains()]
        found += [f"netns {name}" for name in host.pod_network_namespaces()]
        found += [f"mount {point}" for point in host.mounts_under(self.paths.root)]
        found += [f"cgroup {tree}" for tree in host.kubelet_cgroups()]
        if host.component_cgroup().exists():
            found.append(f"cgroup {host.component_cgroup()}")
        if self.paths.saved_sysctls.exists():
            found.append("changed sysctls")
        return found

    # --- start ----------------------------------------------------------------

    def _start(self, bin_dir: Path) -> None:
        paths = self.paths
        for directory in (paths.root, paths.logs, paths.pids, paths.config, paths.etcd_data):
            directory.mkdir(parents=True, exist_ok=True)
        paths.etcd_data.chmod(0o700)
        host.record_absent_host_paths(paths)
        host.save_sysctls(paths)
        ensure_pki(paths.pki)
        self._write_configs()
        host.ensure_bridge()
        host.ensure_forward_isolation()
        host.ensure_component_cgroup()
        host.ensure_component_egress_isolation()

        self._spawn("etcd", bin_dir)
        self._spawn("containerd", bin_dir)
        self._wait("etcd healthy", self._etcd_healthy, 30)
        self._spawn("kube-apiserver", bin_dir)
        self._wait("containerd answering", self._containerd_answers, 30)
        self._purge_containers()
        self._import_pause_image(bin_dir)
        self._wait("apiserver ready", lambda: self._api_get("/readyz")[0] == 200, 60)
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            self._spawn(name, bin_dir)
        self._wait("kube-proxy and kubelet rules", host.kubernetes_jump_rules_present, 60)
        host.ensure_forward_isolation()
        host.ensure_component_egress_isolation()
        self._wait("node Ready", self._node_ready, 90)
        self._wait(
            "default ServiceAccount",
            lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            60,
        )

    def _write_configs(self) -> None:
        paths, config = self.paths, self.paths.config
        files = {
            config / "containerd.toml": cfg.containerd_config(paths),
            config / "resolv.conf": cfg.resolv_conf(),
            config / "kubelet.yaml": cfg.kubelet_config(paths),
            config / "kube-proxy.yaml": cfg.kube_proxy_config(paths),
            paths.cni_config_dir / "10-batcomputer.conflist": cfg.cni_conflist(paths),
            paths.kubeconfig: cfg.kubeconfig(paths, "admin"),
        }
        for user, file_name in (
            ("controller-manager", "controller-manager.kubeconfig"),
            ("scheduler", "scheduler.kubeconfig"),
            ("kube-proxy", "kube-proxy.kubeconfig"),
            ("kubelet-client", "kubelet.kubeconfig"),
        ):
            files[config / file_name] = cfg.kubeconfig(paths, user)
        for registry in cfg.MIRRORED_REGISTRIES:
            files[paths.registry_hosts_dir / registry / "hosts.toml"] = cfg.registry_hosts_toml()
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        paths.kubeconfig.chmod(0o600)

    def _spawn(self, name: str, bin_dir: Path) -> None:
        command = cfg.component_command(name, self.paths, bin_dir)
        # A clean environment: no proxy settings or credentials of the caller leak in.
        env = {
            "PATH": COMPONENT_PATH,
            "HOME": str(self.paths.root),
            **cfg.component_environment(name),
        }
        # Each run starts fresh logs, so they describe the cluster that is running.
        with self.paths.log_file(name).open("wb") as log:
            process = _popen_detached(command, env, log, host.component_cgroup())
        start_time = ProcessRecord.start_time_of(process.pid)
        if start_time is None:
            raise CommandError(f"{name} exited at once; see {self.paths.log_file(name)}")
        self.paths.pid_file(name).write_text(
            json.dumps({"pid": process.pid, "start_time": start_time, "command": command})
        )

    def _wait(self, what: str, condition, timeout: float) -> None:
        started = time.monotonic()
        while not condition():
            for name in cfg.COMPONENTS_IN_START_ORDER:
                if self.paths.pid_file(name).exists() and not self._record(name):
                    raise CommandError(f"{name} died; see {self.paths.log_file(name)}")
            if time.monotonic() - started > timeout:
                raise CommandError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.25)
        say(f"{what} ({time.monotonic() - started:.1f} s)")

    # --- health probes ----------------------------------------------------------

    def _api_get(self, path: str) -> tuple[int, str]:
        if not (self.paths.pki / "admin.crt").exists():
            return 0, "no PKI"
        return ApiClient(self.paths).get(path)

    def _node_ready(self) -> bool:
        status, body = self._api_get(f"/api/v1/nodes/{cfg.NODE_NAME}")
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _etcd_healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{cfg.ETCD_CLIENT_URL}/health", timeout=2) as response:
                return json.loads(response.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _ctr(self, *args: str, check: bool = True) -> str:
        address = str(self.paths.containerd_socket)
        return run(
            ["ctr", "--address", address, "-n", cfg.CONTAINERD_NAMESPACE, *args], check=check
        ).stdout

    def _containerd_answers(self) -> bool:
        if not self.paths.containerd_socket.exists():
            return False
        version = run(["ctr", "--address", self.paths.containerd_socket, "version"], check=False)
        return version.returncode == 0

    # --- containers and images ----------------------------------------------------

    def _purge_containers(self) -> None:
        """Kill and remove every container in the CRI namespace (pods of an earlier run)."""
        for task in self._ctr("tasks", "ls", "-q", check=False).split():
            self._ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 10
        while self._ctr("tasks", "ls", "-q", check=False).split():
            for task in self._ctr("tasks", "ls", "-q", check=False).split():
                self._ctr("tasks", "delete", task, check=False)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        containers = self._ctr("containers", "ls", "-q", check=False).split()
        if containers:
            self._ctr("containers", "delete", *containers, check=False)

    def _import_pause_image(self, bin_dir: Path) -> None:
        if self._ctr("images", "ls", "-q", f"name=={cfg.PAUSE_IMAGE}").split():
            return
        archive = bin_dir.parent / "pause.oci.tar"
        if not archive.exists():
            layer = bin_dir.parent / "pause-layer.tar"
            write_file_layer({"pause": (bin_dir / cfg.PAUSE_BINARY, 0o755)}, layer)
            write_single_layer_archive(layer, cfg.PAUSE_IMAGE, archive, entrypoint=("/pause",))
            layer.unlink()
        self._ctr("images", "import", str(archive))
        say(f"sandbox image {cfg.PAUSE_IMAGE} imported (built from pause.c)")

    # --- teardown ----------------------------------------------------------------

    def _teardown(self) -> None:
        paths = self.paths
        # The kubelet goes first so it does not restart the containers purged next.
        for name in ("kubelet", "kube-proxy"):
            self._stop(name)
        if self._record("containerd") and self._containerd_answers():
            self._purge_containers()
        for name in reversed(cfg.COMPONENTS_IN_START_ORDER):
            self._stop(name)
        for pid in self._stray_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        host.remove_pod_network_namespaces()
        host.unmount_all_under(paths.root)
        host.remove_own_iptables()
        host.remove_bridge()
        run(["conntrack", "-D", "-s", cfg.POD_SUBNET], check=False)
        run(["conntrack", "-D", "-d", cfg.POD_SUBNET], check=False)
        host.restore_sysctls(paths)
        self._wait_for_no_stray_processes()
        host.remove_kubelet_cgroups()
        host.remove_component_cgroup()
        host.remove_created_host_paths(paths)
        disposable = (
            paths.etcd_data,
            paths.kubelet_root,
            paths.containerd_state,
            paths.cni_ipam_dir,
        )
        for state in disposable:
            if state.exists():
                run(["rm", "-rf", "--one-file-system", state])

    def _stop(self, name: str) -> None:
        record = self._record(name)
        pid_file = self.paths.pid_file(name)
        if record:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while record.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if record.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGKILL)
                while record.alive():
                    time.sleep(0.05)
        pid_file.unlink(missing_ok=True)

    def _stray_processes(self) -> list[int]:
        """Processes of the cluster no PID file names: shims of our containerd, pods, components."""
        socket = str(self.paths.containerd_socket)
        found = set(host.processes_in_kubelet_cgroups()) | set(host.processes_in_component_cgroup())
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
                found.add(int(proc.name))
        return sorted(pid for pid in found if ProcessRecord.start_time_of(pid) is not None)

    def _wait_for_no_stray_processes(self) -> None:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self._stray_processes() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _record(self, name: str) -> ProcessRecord | None:
        """The component's process, only when the recorded PID is still that process."""
        try:
            data = json.loads(self.paths.pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        record = ProcessRecord(data["pid"], data["start_time"])
        return record if record.alive() else None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with (self.paths.root / "cluster.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _popen_detached(command: list[str], env: dict[str, str], log, cgroup: Path) -> subprocess.Popen:
    # The shell moves itself into the cgroup and then becomes the component (same
    # PID), so the component is confined from its first packet on.
    join_then_exec = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    # Own session: the daemons outlive the CLI and ignore the terminal's Ctrl-C.
    return subprocess.Popen(
        ["/bin/sh", "-c", join_then_exec, str(cgroup), *command],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip


def require_host() -> None:
    if os.geteuid() != 0:
        raise CommandError("the local cluster needs root (bridge, iptables, mounts)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise CommandError(f"missing {', '.join(missing)}: run devtools/bootstrap.sh")
