"""What the cluster changes on the host, and how each change is undone.

Bridge, iptables chains, sysctls, pod network namespaces, mounts, cgroups and
the few host directories the kubelet and CNI insist on. Every `ensure_*` has a
`remove_*`/`restore_*` counterpart used by `down` and by `up` when it finds
what a killed run left behind.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster_shell import CommandError, run

SYSCTL_ROOT = Path("/proc/sys")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
# Paths the kubelet, containerd's CRI plugin and libcni write to no matter the
# configuration; removed on `down` only when `up` found them absent.
HOST_PATHS_WRITTEN_BY_COMPONENTS = (
    Path("/var/log/pods"),
    Path("/var/log/containers"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
)
OWN_CHAIN_PREFIXES = ("KUBE-", "BATCOMPUTER-")
IPTABLES_TABLES = ("filter", "nat", "mangle")


# --- sysctls -----------------------------------------------------------------


def read_sysctl(name: str) -> str | None:
    path = SYSCTL_ROOT / name
    return path.read_text().strip() if path.exists() else None


def write_sysctl(name: str, value: str) -> None:
    (SYSCTL_ROOT / name).write_text(value + "\n")


def save_sysctls(paths: cfg.ClusterPaths) -> None:
    """Record the host's values once; a record left by a killed run holds the originals."""
    if paths.saved_sysctls.exists():
        return
    values = {name: read_sysctl(name) for name in cfg.TOUCHED_SYSCTLS}
    paths.saved_sysctls.parent.mkdir(parents=True, exist_ok=True)
    paths.saved_sysctls.write_text(json.dumps({k: v for k, v in values.items() if v is not None}))


def restore_sysctls(paths: cfg.ClusterPaths) -> None:
    if not paths.saved_sysctls.exists():
        return
    for name, value in json.loads(paths.saved_sysctls.read_text()).items():
        if read_sysctl(name) != value:
            write_sysctl(name, value)
    paths.saved_sysctls.unlink()


# --- host paths ----------------------------------------------------------------


def record_absent_host_paths(paths: cfg.ClusterPaths) -> None:
    record = paths.root / "created-host-paths.json"
    known = set(json.loads(record.read_text())) if record.exists() else set()
    known |= {str(path) for path in HOST_PATHS_WRITTEN_BY_COMPONENTS if not path.exists()}
    record.write_text(json.dumps(sorted(known)))


def remove_created_host_paths(paths: cfg.ClusterPaths) -> None:
    record = paths.root / "created-host-paths.json"
    if not record.exists():
        return
    for name in json.loads(record.read_text()):
        run(["rm", "-rf", "--one-file-system", name])
    record.unlink()


# --- bridge and forwarding -----------------------------------------------------


def bridge_exists() -> bool:
    return run(["ip", "link", "show", cfg.BRIDGE_NAME], check=False).returncode == 0


def ensure_bridge() -> None:
    if not bridge_exists():
        run(["ip", "link", "add", cfg.BRIDGE_NAME, "type", "bridge"])
    addresses = run(["ip", "-4", "-o", "addr", "show", "dev", cfg.BRIDGE_NAME]).stdout
    if f" {cfg.BRIDGE_IP}/24 " not in addresses:
        run(["ip", "addr", "add", f"{cfg.BRIDGE_IP}/24", "dev", cfg.BRIDGE_NAME])
    run(["ip", "link", "set", cfg.BRIDGE_NAME, "up"])
    # Service addresses stay on the bridge too: an unassigned ClusterIP is never
    # sent towards the default gateway.
    run(
        ["ip", "route", "replace", cfg.SERVICE_SUBNET, "dev", cfg.BRIDGE_NAME, "src", cfg.BRIDGE_IP]
    )


def remove_bridge() -> None:
    if bridge_exists():
        run(["ip", "link", "delete", cfg.BRIDGE_NAME])


def forward_rules() -> list[list[str]]:
    """Pod traffic may be forwarded only back onto the bridge; all else is refused.

    REJECT rather than DROP so a pod's attempt fails at once; the ICMP error
    goes back onto the bridge only.
    """
    return [
        ["-i", cfg.BRIDGE_NAME, "!", "-o", cfg.BRIDGE_NAME, "-j", "REJECT",
         "--reject-with", "icmp-net-prohibited"],
        ["!", "-i", cfg.BRIDGE_NAME, "-o", cfg.BRIDGE_NAME, "-j", "REJECT",
         "--reject-with", "icmp-net-prohibited"],
    ]  # fmt: skip


def ensure_forward_isolation() -> None:
    chain = cfg.FORWARD_CHAIN
    if run(["iptables", "-t", "filter", "-n", "-L", chain], check=False).returncode != 0:
        run(["iptables", "-t", "filter", "-N", chain])
    run(["iptables", "-t", "filter", "-F", chain])
    for rule in forward_rules():
        run(["iptables", "-t", "filter", "-A", chain, *rule])
    while (
        run(["iptables", "-t", "filter", "-D", "FORWARD", "-j", chain], check=False).returncode == 0
    ):
        pass
    run(["iptables", "-t", "filter", "-I", "FORWARD", "1", "-j", chain])


def kubernetes_jump_rules_present() -> bool:
    """kube-proxy's FORWARD jumps and the kubelet's OUTPUT firewall are in place.

    Both are inserted at the top of their chains once and never moved again, so
    the isolation jumps are put back in front of them after this holds.
    """
    forward = run(["iptables", "-t", "filter", "-S", "FORWARD"]).stdout
    output = run(["iptables", "-t", "filter", "-S", "OUTPUT"]).stdout
    return "-j KUBE-FORWARD" in forward and "-j KUBE-FIREWALL" in output


def forward_isolation_active() -> bool:
    rules = run(["iptables", "-t", "filter", "-S", "FORWARD"]).stdout.splitlines()
    return f"-A FORWARD -j {cfg.FORWARD_CHAIN}" in rules


def egress_rules() -> list[list[str]]:
    """Component traffic may use loopback and the bridge only (checked after DNAT)."""
    return [
        ["-o", "lo", "-j", "RETURN"],
        ["-o", cfg.BRIDGE_NAME, "-j", "RETURN"],
        ["-j", "REJECT"],
    ]


def ensure_component_egress_isolation() -> None:
    jump = ["-m", "cgroup", "--path", cfg.COMPONENT_CGROUP, "-j", cfg.EGRESS_CHAIN]
    for binary in ("iptables", "ip6tables"):
        chain = cfg.EGRESS_CHAIN
        if run([binary, "-t", "filter", "-n", "-L", chain], check=False).returncode != 0:
            run([binary, "-t", "filter", "-N", chain])
        run([binary, "-t", "filter", "-F", chain])
        for rule in egress_rules():
            run([binary, "-t", "filter", "-A", chain, *rule])
        while run([binary, "-t", "filter", "-D", "OUTPUT", *jump], check=False).returncode == 0:
            pass
        run([binary, "-t", "filter", "-I", "OUTPUT", "1", *jump])


def component_egress_isolation_active() -> bool:
    for binary in ("iptables", "ip6tables"):
        rules = run([binary, "-t", "filter", "-S", "OUTPUT"]).stdout.splitlines()
        if not any(rule.endswith(f"-j {cfg.EGRESS_CHAIN}") for rule in rules):
            return False
    return True


def refused_component_packets() -> int:
    """Packets of cluster components refused for leaving loopback and bridge (v4 + v6)."""
    refused = 0
    for binary in ("iptables", "ip6tables"):
        listing = run([binary, "-t", "filter", "-L", cfg.EGRESS_CHAIN, "-v", "-n", "-x"]).stdout
        refused += sum(int(line.split()[0]) for line in listing.splitlines() if " REJECT " in line)
    return refused


def own_iptables_state(binary: str, table: str) -> tuple[list[str], list[list[str]]]:
    """Our chains in a table, and the rules of other chains that jump into them."""
    dump = run([binary + "-save", "-t", table], check=False).stdout.splitlines()
    chains = [line[1:].split()[0] for line in dump if line.startswith(":")]
    own = [chain for chain in chains if chain.startswith(OWN_CHAIN_PREFIXES)]
    jumps = []
    for line in dump:
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        chain = words[1]
        target = words[words.index("-j") + 1] if "-j" in words else None
        if chain not in own and target in own:
            jumps.append(words[1:])
    return own, jumps


def remove_own_iptables() -> None:
    """Remove every KUBE-* and BATCOMPUTER-* chain (kube-proxy, kubelet, ours), v4 and v6."""
    for binary in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            own, jumps = own_iptables_state(binary, table)
            for jump in jumps:
                run([binary, "-t", table, "-D", *jump], check=False)
            for chain in own:
                run([binary, "-t", table, "-F", chain], check=False)
            for chain in own:
                run([binary, "-t", table, "-X", chain], check=False)


def leftover_iptables_chains() -> list[str]:
    found = []
    for binary in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            own, _ = own_iptables_state(binary, table)
            found += [f"{binary}/{table}/{chain}" for chain in own]
    return found


# --- pod network namespaces, mounts, cgroups --------------------------------------


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4])
    raise CommandError("no cgroup2 hierarchy mounted: component egress cannot be confined")


def component_cgroup() -> Path:
    return cgroup2_mount() / cfg.COMPONENT_CGROUP


def ensure_component_cgroup() -> Path:
    cgroup = component_cgroup()
    cgroup.mkdir(exist_ok=True)
    return cgroup


def processes_in_component_cgroup() -> list[int]:
    procs = component_cgroup() / "cgroup.procs"
    return [int(pid) for pid in procs.read_text().split()] if procs.exists() else []


def remove_component_cgroup() -> None:
    if component_cgroup().is_dir():
        component_cgroup().rmdir()


def pod_network_namespaces() -> list[str]:
    """Namespaces made by containerd's CRI whose interface sits in our pod subnet."""
    if not NETNS_DIR.is_dir():
        return []
    prefix = cfg.POD_SUBNET.rsplit(".", 1)[0] + "."
    found = []
    for entry in sorted(NETNS_DIR.iterdir()):
        if not entry.name.startswith("cni-"):
            continue
        addresses = run(["ip", "-n", entry.name, "-4", "-o", "addr"], check=False).stdout
        if f"inet {prefix}" in addresses or not addresses.strip():
            found.append(entry.name)
    return found


def remove_pod_network_namespaces() -> None:
    for name in pod_network_namespaces():
        run(["ip", "netns", "delete", name], check=False)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(root):
            points.append(point)
    # Deepest first, so nested mounts come off before their parents.
    return sorted(points, key=lambda point: point.count("/"), reverse=True)


def unmount_all_under(root: Path) -> None:
    for point in mounts_under(root):
        if run(["umount", point], check=False).returncode != 0:
            run(["umount", "-l", point], check=False)


def kubelet_cgroups() -> list[Path]:
    """The kubelet's cgroup trees (cgroupfs driver, every v1 controller)."""
    if not CGROUP_ROOT.is_dir():
        return []
    return [tree for tree in CGROUP_ROOT.glob("*/kubepods") if tree.is_dir()]


def remove_kubelet_cgroups() -> None:
    for tree in kubelet_cgroups():
        for directory in sorted(tree.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                directory.rmdir()
        tree.rmdir()


def processes_in_kubelet_cgroups() -> list[int]:
    pids = set()
    for tree in kubelet_cgroups():
        for procs in tree.rglob("cgroup.procs"):
            pids |= {int(pid) for pid in procs.read_text().split()}
    return sorted(pids)
