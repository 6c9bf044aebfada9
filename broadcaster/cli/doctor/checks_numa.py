"""NUMA checks: is the process on one node, is that the NIC's node, does the kernel move pages.

A cache miss served by another node's memory, and every packet DMA'd into another node's memory,
pays the interconnect (QPI/UPI/Infinity Fabric): the seed's "+600 ns QPI tax" (004 §5.1). Single
node machines (most cloud instances up to one socket) pass all three.
"""

from __future__ import annotations

from broadcaster.cli.doctor.model import Finding, Host, Status, format_cpulist, parse_cpulist

__all__ = ["check_numa_balancing", "check_numa_nic", "check_numa_process", "process_nodes"]


def process_nodes(host: Host, nodes: dict[int, frozenset[int]]) -> tuple[set[int], set[int]]:
    """(nodes whose CPUs the process may run on, nodes it may allocate memory on)."""
    cpus = host.allowed_cpus() or frozenset()
    cpu_nodes = {n for n, node_cpus in nodes.items() if node_cpus & cpus}
    mems_text = host.status_field("Mems_allowed_list")
    try:
        mems = parse_cpulist(mems_text) if mems_text is not None else frozenset(nodes)
    except ValueError:
        mems = frozenset(nodes)
    return cpu_nodes, {n for n in mems if n in nodes}


def _nodes_text(nodes: set[int]) -> str:
    return format_cpulist(nodes)


def check_numa_process(host: Host) -> Finding:
    """Warns when the process may run or allocate on more than one node."""
    title = "NUMA placement"
    nodes = host.numa_nodes()
    if nodes is None:
        return Finding(
            "numa.process", title, Status.UNKNOWN, "unknown", "/sys/devices/system/node missing"
        )
    if len(nodes) == 1:
        return Finding("numa.process", title, Status.OK, "1 node")
    cpu_nodes, mem_nodes = process_nodes(host, nodes)
    value = (
        f"{len(nodes)} nodes; CPUs on node(s) {_nodes_text(cpu_nodes)}, "
        f"memory on node(s) {_nodes_text(mem_nodes)}"
    )
    if len(cpu_nodes | mem_nodes) <= 1:
        return Finding("numa.process", title, Status.OK, value)
    return Finding(
        "numa.process",
        title,
        Status.WARN,
        value,
        "The process spans NUMA nodes: memory touched from the other node costs ~100 ns more per "
        "cache miss and the scheduler may move the loop across; bind it to one node ([cpu] "
        "pinning, or numactl --cpunodebind=N --membind=N), the NIC's.",
    )


def _nics(host: Host) -> list[tuple[str, int, str]]:
    """(name, numa_node, operstate) of every NIC with a device (physical or virtio)."""
    found = []
    for dev in host.glob("sys/class/net/*/device/numa_node"):
        iface = dev.parent.parent
        text = host.read(str(dev.relative_to(host.root)))
        state = host.read(str((iface / "operstate").relative_to(host.root))) or "unknown"
        try:
            node = int(text) if text is not None else -1
        except ValueError:
            node = -1
        found.append((iface.name, node, state))
    return found


def check_numa_nic(host: Host) -> Finding:
    """Warns when a NIC that is up sits on a node the process does not run on."""
    title = "NIC locality"
    nics = _nics(host)
    if not nics:
        return Finding(
            "numa.nic",
            title,
            Status.UNKNOWN,
            "no NIC reports a NUMA node",
            "No /sys/class/net/*/device/numa_node (virtual NICs, or a container).",
        )
    value = ", ".join(f"{name}: node {node}" for name, node, _ in nics)
    nodes = host.numa_nodes()
    if nodes is None or len(nodes) <= 1:
        return Finding("numa.nic", title, Status.OK, f"{value} (single node)")
    cpu_nodes, _ = process_nodes(host, nodes)
    value += f"; process on node(s) {_nodes_text(cpu_nodes)}"
    remote = [n for n, node, state in nics if state == "up" and node >= 0 and node not in cpu_nodes]
    if remote:
        return Finding(
            "numa.nic",
            title,
            Status.WARN,
            value,
            f"{', '.join(remote)} is on another node than the process: every packet crosses the "
            "interconnect (the seed's ~600 ns tax); pin the service to the NIC's node.",
        )
    if all(node < 0 for _, node, _ in nics):
        return Finding(
            "numa.nic", title, Status.UNKNOWN, value, "The firmware reports no node for the NICs."
        )
    return Finding("numa.nic", title, Status.OK, value)


def check_numa_balancing(host: Host) -> Finding:
    """``kernel.numa_balancing = 1`` warns on multi-node hosts: the kernel periodically unmaps
    the process's pages to sample accesses (minor faults on the hot path) and migrates them."""
    title = "automatic NUMA balancing"
    text = host.read("proc/sys/kernel/numa_balancing")
    if text is None:
        return Finding("numa.balancing", title, Status.UNKNOWN, "unknown", "sysctl missing")
    nodes = host.numa_nodes()
    if text == "0" or nodes is None or len(nodes) <= 1:
        suffix = "" if nodes is None or len(nodes) > 1 else " (single node: inactive)"
        return Finding("numa.balancing", title, Status.OK, f"{text}{suffix}")
    return Finding(
        "numa.balancing",
        title,
        Status.WARN,
        text,
        "Automatic NUMA balancing unmaps the service's pages every few seconds to sample its "
        "accesses (µs-long faults on the hot path) and migrates them; pin the service to one "
        "node and set sysctl kernel.numa_balancing=0.",
    )
