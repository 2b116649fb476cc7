"""The policy's syscall rules as a seccomp filter: the BPF program bubblewrap loads (--seccomp).

Compiled once, when the backend starts, with libseccomp (libseccomp.so.2, through pyseccomp's
ctypes binding); every sandbox then gets the same bytes on a descriptor of its own. Everything
is allowed but the policy's denials; a syscall of another architecture (32-bit int 0x80, x32)
kills the process, so that no other syscall table slips past the rules.

The policy's range of unreviewed syscall numbers is one comparison of our own, put in front of
libseccomp's program: as rules, one per number, they made the program twice as long (1,080
instructions against 363), and the kernel converts and compiles a filter every time a sandbox
loads it (about 0.6 ms of a zygote child's CPU for the long one).
"""

import errno
import json
import os
import struct
from typing import Any

from executor.backends.local.policy import ArgMatch, SyscallDenial, SyscallPolicy
from executor.errors import SandboxFailure

_LOW32 = 0xFFFFFFFF
_NR_SCMP_ERROR = -1  # libseccomp's answer for a name it does not know on any architecture
_OPTIMIZE_BINARY_TREE = 2
# Classic BPF, as seccomp takes it (linux/filter.h, linux/seccomp.h).
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_SECCOMP_DATA_NR, _SECCOMP_DATA_ARCH = 0, 4
_SECCOMP_RET_ERRNO = 0x00050000


def _libseccomp() -> Any:
    try:
        import pyseccomp  # type: ignore[import-untyped]
    except (ImportError, RuntimeError) as exc:  # RuntimeError: the binding found no library
        raise SandboxFailure(
            f"libseccomp is not usable ({exc}): run `make setup` "
            "(or apt-get install libseccomp2, and pip install pyseccomp)"
        ) from exc
    return pyseccomp


def complement_blocks(allowed: frozenset[int], bits: int = 32) -> list[tuple[int, int]]:
    """Aligned blocks (mask, value) that cover every `bits`-bit number but the allowed ones.

    libseccomp takes one comparison per argument and rule, and its rules add up: "refused unless
    one of these" is then the numbers around them, as power-of-two blocks (about `bits` blocks
    per allowed value), each one masked comparison.
    """
    full = (1 << bits) - 1
    blocks: list[tuple[int, int]] = []
    pending = [(0, bits)]  # (first value, log2 of the block's size)
    while pending:
        start, size_bits = pending.pop()
        end = start + (1 << size_bits) - 1
        if not any(start <= value <= end for value in allowed):
            blocks.append((full ^ ((1 << size_bits) - 1), start))
        elif size_bits > 0:
            half = 1 << (size_bits - 1)
            pending += [(start + half, size_bits - 1), (start, size_bits - 1)]
    return blocks


def _conditions(sc: Any, denial: SyscallDenial) -> list[tuple[Any, ...]]:
    """The argument comparisons of the denial's rules: one rule per tuple, any may match."""
    match denial.match:
        case ArgMatch.ALWAYS:
            return [()]
        case ArgMatch.ANY_BIT:
            (mask,) = denial.values
            bits = [1 << i for i in range(64) if mask >> i & 1]
            return [(sc.Arg(0, sc.MASKED_EQ, bit, bit),) for bit in bits]
        case ArgMatch.ONE_OF:
            # The low 32 bits only: what the kernel reads of an int argument.
            return [(sc.Arg(0, sc.MASKED_EQ, _LOW32, value),) for value in denial.values]
        case ArgMatch.NONE_OF:
            blocks = complement_blocks(frozenset(denial.values))
            return [(sc.Arg(0, sc.MASKED_EQ, mask, value),) for mask, value in blocks]


def compile_filter(policy: SyscallPolicy) -> bytes:
    """The filter as BPF bytes for bubblewrap (blocking: some milliseconds)."""
    sc = _libseccomp()
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    # A binary search over syscall numbers rather than a list walked by every syscall.
    flt.set_attr(sc.Attr.CTL_OPTIMIZE, _OPTIMIZE_BINARY_TREE)
    for denial in policy.denials:
        number = sc.resolve_syscall(sc.Arch.NATIVE, denial.syscall)
        if number == _NR_SCMP_ERROR:
            raise ValueError(f"the policy denies {denial.syscall!r}, which is no syscall")
        if number < 0:
            continue  # none on this architecture: the kernel answers ENOSYS by itself
        action = sc.ERRNO(getattr(errno, denial.errno.value))
        for comparisons in _conditions(sc, denial):
            flt.add_rule(action, number, *comparisons)
    fd = os.memfd_create("code-exec-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b", buffering=0) as program:
        flt.export_bpf(program)
        program.seek(0)
        rules = program.read()
    unreviewed = getattr(errno, policy.unreviewed_errno.value)
    return range_prefix(sc.system_arch(), policy.unreviewed, unreviewed) + rules


# The architectures a container's profile names: its rules then hold for 32-bit (int 0x80)
# and x32 calls too, each resolved in its own syscall table.
_CONTAINER_ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")


def _container_args(denial: SyscallDenial) -> list[list[dict[str, Any]]]:
    """The denial's argument conditions in the container profile's terms, one list per rule."""
    match denial.match:
        case ArgMatch.ALWAYS:
            return [[]]
        case ArgMatch.ONE_OF:
            return [[{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}] for v in denial.values]
        case ArgMatch.NONE_OF:
            # runc and crun read a masked comparison as: (argument & value) == valueTwo.
            return [
                [{"index": 0, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}]
                for mask, value in complement_blocks(frozenset(denial.values))
            ]
        case ArgMatch.ANY_BIT:
            (mask,) = denial.values
            bits = [1 << i for i in range(64) if mask >> i & 1]
            return [
                [{"index": 0, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}]
                for bit in bits
            ]


def container_profile(policy: SyscallPolicy, executor_needs: frozenset[str]) -> dict[str, Any]:
    """A seccomp profile for the executor's container (Docker's, Podman's and Kubernetes'
    Localhost format): the sandboxes' denials, less the syscalls the executor itself makes.

    Allowed by default, as the sandboxes' own filter is: the sandboxes' filter is the inner
    wall, loaded by each sandbox over this one; this profile keeps the executor's container
    (its own processes, and any process that would get out of a sandbox) from the rest.
    """
    rules: list[dict[str, Any]] = []
    for denial in policy.denials:
        if denial.syscall in executor_needs:
            continue
        for args in _container_args(denial):
            rule: dict[str, Any] = {
                "names": [denial.syscall],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": getattr(errno, denial.errno.value),
            }
            if args:
                rule["args"] = args
            rules.append(rule)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(_CONTAINER_ARCHITECTURES),
        "syscalls": rules,
    }


def render_profile(profile: dict[str, Any]) -> str:
    """The profile as JSON, one rule per line."""
    head = {key: value for key, value in profile.items() if key != "syscalls"}
    lines = json.dumps(head, indent=2)[:-2] + ',\n  "syscalls": [\n'
    rules = [f"    {json.dumps(rule)}" for rule in profile["syscalls"]]
    return lines + ",\n".join(rules) + "\n  ]\n}\n"


def range_prefix(arch: int, numbers: range, errno_value: int) -> bytes:
    """BPF that answers errno_value to the native architecture's syscalls in numbers, and
    falls through to the program after it for every other call (another architecture's, an
    x32 call, a number outside the range): that program's own checks then apply."""

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    return b"".join(
        (
            op(_BPF_LD_W_ABS, _SECCOMP_DATA_ARCH),
            op(_BPF_JEQ_K, arch, jt=0, jf=4),  # another architecture: to the rules
            op(_BPF_LD_W_ABS, _SECCOMP_DATA_NR),
            op(_BPF_JGE_K, numbers.stop, jt=2, jf=0),  # past the range (x32 too): to the rules
            op(_BPF_JGE_K, numbers.start, jt=0, jf=1),  # below it: to the rules
            op(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno_value),
        )
    )
