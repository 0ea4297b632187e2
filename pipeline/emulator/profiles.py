"""CPU profiles for the arm64 emulator: which core qemu emulates, and what the guest is told.

A profile sets two things a phone's CPU decides:

* qemu's ``-cpu`` model, which fixes the instructions the guest may run and the feature bits it
  reads from the kernel (``AT_HWCAP``): the Cortex-A53 has no dot-product instructions
  (``asimddp``), the Cortex-A76 has them, so LiteRT picks different int8 kernels on each.
* ``/proc/cpuinfo`` of the guest. qemu-user 7.2 shows the guest the host's x86 /proc/cpuinfo;
  the cpuinfo library inside LiteRT (XNNPACK) reads it to find the cores' implementer and part
  numbers, finds no arm64 cores there and crashes (a NULL dereference while it sorts cores into
  clusters). Each profile therefore gets a root of its own whose /proc/cpuinfo describes the
  emulated core, as the phone's kernel would; XNNPACK then also picks the kernels it tunes for
  that core.

``max`` is deliberately not a profile: with qemu 7.2 it turns on SME, and LiteRT 2.3's SME int8
kernels return wrong numbers under that qemu (with ``max,sme=off`` they match the other cores).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "CpuProfile", "cpuinfo_text", "profile"]

HWCAP_ASIMDDP = 1 << 20  # dot-product instructions (SDOT/UDOT), arch/arm64/include/uapi/asm/hwcap.h


@dataclass(frozen=True)
class CpuProfile:
    """A CPU profile: qemu's -cpu model and the core the guest's /proc/cpuinfo describes."""

    name: str          # as written after "litert-arm64:" in a target
    qemu_cpu: str      # qemu's -cpu model
    part: int          # MIDR part number (ARM Ltd. implementer 0x41)
    variant: int
    revision: int
    features: str      # the Features line of /proc/cpuinfo, as the kernel prints it for this core
    description: str

    @property
    def dot_product(self) -> bool:
        """Whether the core has the dot-product instructions (asimddp)."""
        return "asimddp" in self.features.split()


_V80 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = f"{_V80} atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"

PROFILES: dict[str, CpuProfile] = {
    p.name: p
    for p in (
        CpuProfile("cortex-a53", "cortex-a53", 0xD03, 0x0, 4, _V80,
                   "low-end phone core: Cortex-A53, Armv8.0-A, no dot product"),
        CpuProfile("cortex-a72", "cortex-a72", 0xD08, 0x0, 3, _V80,
                   "mid-range phone core: Cortex-A72, Armv8.0-A, no dot product"),
        CpuProfile("cortex-a76", "cortex-a76", 0xD0B, 0x4, 1, _V82,
                   "recent phone core: Cortex-A76, Armv8.2-A with dot product"),
    )
}


def profile(name: str) -> CpuProfile:
    """The CPU profile of that name; KeyError for an unknown one."""
    if name not in PROFILES:
        raise KeyError(name)
    return PROFILES[name]


def cpuinfo_text(p: CpuProfile, cpus: int) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel prints it, ``cpus`` identical cores of profile ``p``."""
    block = (
        "processor\t: {k}\nBogoMIPS\t: 38.40\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: {variant:#x}\nCPU part\t: {part:#05x}\nCPU revision\t: {revision}\n\n"
    )
    return "".join(block.format(k=k, features=p.features, variant=p.variant, part=p.part, revision=p.revision)
                   for k in range(max(1, cpus)))
